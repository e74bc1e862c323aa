// The prompt view (prompt.html, live with `interp serve`): type text, see every token shaded by one
// feature's activation, and the top features of the token under the pointer, linked to their pages.
// The shaded feature is ?feature=ID in the address (default: the strongest on the text).
"use strict";

(function () {
  var R = window.monoReport, el = R.el, meta = R.meta, rows = R.rows || [];
  var app = document.getElementById("app");
  app.appendChild(R.topbar("prompt"));
  var main = el("main");
  app.appendChild(main);
  main.appendChild(el("h1", {text: "Prompt"}));

  var body = el("div", {id: "prompt-body"});
  main.appendChild(el("section", {class: "panel"}, [body]));

  R.live.whenLive(function (info) {
    if (!info) return body.appendChild(R.live.howToStart("The prompt view"));
    var params = new URLSearchParams(window.location.search);
    var input = el("textarea", {id: "prompt-text", rows: "5", spellcheck: "false",
      maxlength: String(info.limits.text_chars), "aria-label": "text"});
    input.value = params.get("text") || "";
    var featureBox = el("input", {id: "prompt-feature", type: "number", min: "0", max: String(info.d_sae - 1),
      placeholder: "strongest", "aria-label": "shade by feature"});
    featureBox.value = params.get("feature") || "";
    var run = el("button", {id: "prompt-run", class: "btn", text: "Show features"});
    var status = el("div", {id: "prompt-status", class: "muted"});
    var tokensLine = el("div", {id: "prompt-tokens", class: "text prompt-tokens"});
    var detail = el("div", {id: "prompt-detail"});
    body.appendChild(el("div", {class: "prompt-form"}, [input,
      el("div", {class: "prompt-controls"}, [el("label", {}, ["shade by feature ", featureBox]), run, status])]));
    body.appendChild(tokensLine);
    body.appendChild(detail);
    var last = null;

    function about(id) {
      var row = rows[id];
      if (!row) return "";
      return row[7] ? R.labelText(row[7]) : row[5].map(function (t) { return R.chipText(R.tokenString(t)); }).join(" ");
    }

    function showToken(k) {
      detail.textContent = "";
      var list = last.features[k];
      detail.appendChild(el("h3", {}, ["Top features of ", R.chip(last.tokens[k])]));
      if (!list.length) return detail.appendChild(el("div", {class: "empty", text: "no feature fires here"}));
      var table = el("table", {class: "list", id: "prompt-features"});
      list.forEach(function (f) {
        var shade = el("button", {class: "btn small", text: "shade", title: "shade the text by feature " + f.id,
          onclick: function () { featureBox.value = String(f.id); draw(); }});
        table.appendChild(el("tr", {}, [
          el("td", {}, [el("a", {href: "feature.html#" + f.id, text: "#" + f.id})]),
          el("td", {class: "num", text: R.fmt(f.activation)}),
          el("td", {class: "about", text: about(f.id)}), el("td", {}, [shade])]));
      });
      detail.appendChild(table);
    }

    // Tokens shaded by the chosen feature (relative to its largest value on this text).
    function draw() {
      tokensLine.textContent = "";
      if (!last) return;
      var chosen = featureBox.value === "" ? null : parseInt(featureBox.value, 10);
      if (chosen === null) {
        var best = -1;
        last.features.forEach(function (list) {
          if (list.length && list[0].activation > best) { best = list[0].activation; chosen = list[0].id; }
        });
      }
      var values = last.features.map(function (list) {
        var hit = list.filter(function (f) { return f.id === chosen; })[0];
        return hit ? hit.activation : 0;
      });
      var peak = Math.max.apply(null, values.concat([1e-12]));
      last.tokens.forEach(function (s, k) {
        var span = el("span", {class: "tok", text: R.showToken(s), tabindex: "0"});
        if (values[k] > 0) span.style.background = "rgba(240, 110, 30, " + (0.12 + 0.78 * values[k] / peak).toFixed(3) + ")";
        var top = last.features[k].slice(0, 3).map(function (f) { return "#" + f.id + " " + R.fmt(f.activation); }).join(", ");
        span.title = JSON.stringify(s) + (chosen !== null ? "  feature " + chosen + ": " + R.fmt(values[k]) : "") +
          (top ? "  top: " + top : "");
        span.addEventListener("mouseenter", function () { showToken(k); });
        span.addEventListener("focus", function () { showToken(k); });
        span.addEventListener("click", function () { showToken(k); });
        tokensLine.appendChild(span);
      });
      status.textContent = last.tokens.length + " tokens" + (chosen !== null ? " · shaded by feature " + chosen : "");
      var state = new URLSearchParams();
      state.set("text", input.value);
      if (featureBox.value !== "") state.set("feature", featureBox.value);
      history.replaceState(null, "", "?" + state.toString());
    }

    function go() {
      status.textContent = "running…";
      R.live.activations(input.value).then(function (result) {
        last = result;
        draw();
        if (last.tokens.length) showToken(0);
      }, function (err) { status.textContent = err.message; });
    }
    run.addEventListener("click", go);
    featureBox.addEventListener("change", draw);
    input.addEventListener("keydown", function (e) { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) go(); });
    if (input.value) go();
  });
})();
