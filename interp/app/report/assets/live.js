// The live panels' link to `interp serve` (interp.serve): its JSON API when the report is served by
// it, else a note saying how to start it. From file:// nothing is fetched.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  var info = null, waiting = null;

  // callback(info) once: the server's /api/info, or null where there is no live server.
  function whenLive(callback) {
    if (info !== null || waiting === "none") return callback(info);
    if (waiting) return waiting.push(callback);
    waiting = [callback];
    var finish = function (value) {
      info = value;
      var callbacks = waiting;
      waiting = value ? null : "none";
      callbacks.forEach(function (cb) { cb(value); });
    };
    if (window.location.protocol === "file:") return finish(null);
    fetch("api/info").then(function (r) { return r.ok ? r.json() : null; })
      .then(finish, function () { finish(null); });
  }

  // fetch JSON; rejects with the server's message on a 4xx/5xx answer, and with the command that starts
  // the server again when none answers.
  function call(url, options) {
    return fetch(url, options).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body && body.error ? body.error : "HTTP " + r.status);
        return body;
      });
    }, function () {
      throw new Error("The live server does not answer; start it again: " + startCommand());
    });
  }

  // A word for a POSIX shell: as it is when it holds only safe characters, else in single quotes.
  function shellWord(s) {
    s = String(s);
    return /^[A-Za-z0-9_.\/:@%+=,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
  }

  // The folder this page lies in, as the shell command should name it.
  function reportFolder() {
    var path = decodeURIComponent(window.location.pathname);
    return window.location.protocol === "file:" ? path.slice(0, path.lastIndexOf("/")) || "." : "REPORT";
  }

  // The shell command that serves this report with its model and SAE.
  function startCommand() {
    var meta = R.meta || {};
    return "interp serve --report " + shellWord(reportFolder()) + " --model " +
      (meta.model_spec ? shellWord(meta.model_spec) : "MODEL") + " --sae " + (meta.sae_path ? shellWord(meta.sae_path) : "SAE");
  }

  R.live = {
    whenLive: whenLive,
    activations: function (text) { return call("api/activations?text=" + encodeURIComponent(text)); },
    generate: function (body) {
      return call("api/generate", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    },
    // What a live panel shows where no server answers: the command that starts one for this report.
    howToStart: function (what) {
      return el("div", {class: "live-off"}, [
        el("p", {text: what + " needs the live server. Start it, then open the address it prints:"}),
        el("pre", {class: "command", text: startCommand()}),
      ]);
    },
  };
})();
