// Shared helpers of the report's pages. Every piece of text reaches the DOM through textContent
// (or a DOM property such as title), never through innerHTML: corpus text is untrusted.
"use strict";

var monoReport = window.monoReport || {};
window.monoReport = monoReport;

// el("div", {class: "x", title: "t", href: "#"}, [children or strings])
// Token ids the analysis left out (BOS, chosen tokens): shown muted in examples.
monoReport.special = {};
monoReport.setSpecial = function (ids) {
  (ids || []).forEach(function (id) { monoReport.special[id] = true; });
};

monoReport.el = function (tag, attrs, children) {
  var node = document.createElement(tag);
  if (attrs) {
    for (var key in attrs) {
      if (attrs[key] === undefined || attrs[key] === null) continue;
      if (key === "class") node.className = attrs[key];
      else if (key === "text") node.textContent = attrs[key];
      else if (key === "style") node.style.cssText = attrs[key];
      else if (key === "title") node.title = attrs[key];
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), attrs[key]);
      else node.setAttribute(key, attrs[key]);
    }
  }
  (children || []).forEach(function (child) {
    if (child === null || child === undefined) return;
    node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  });
  return node;
};

// A token string as shown in running text: newlines, tabs and carriage returns made visible, runs of
// more than 4 spaces shortened to 4 (the hover text has the exact string), empty shown as ∅.
monoReport.showToken = function (s) {
  if (s === "") return "∅";
  return monoReport.controlText(s.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ {5,}/g, "    "));
};

// Other control characters (which fonts draw as empty boxes, or not at all) as their Unicode control
// pictures: U+0000 as ␀, ESC as ␛, DEL as ␡.
monoReport.controlText = function (s) {
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, function (c) {
    var code = c.charCodeAt(0);
    return String.fromCharCode(code === 0x7f ? 0x2421 : 0x2400 + code);
  });
};

// A token string as a chip: the same, with spaces shown as · so that " the" and "the" differ.
monoReport.chipText = function (s) {
  if (s === "") return "∅";
  return monoReport.controlText(s.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ {9,}/g, "        ").replace(/ /g, "·"));
};

// A label as shown: each `token` in it (written with \n, \t, \r, \\ and \` escapes, as
// interp.labels.rules.show_token writes them) in its chip form, so that "`\n       `" reads "`↵·······`".
monoReport.labelText = function (s) {
  var escapes = {n: "\n", t: "\t", r: "\r"};
  return String(s || "").replace(/`((?:[^`\\]|\\.)*)`/g, function (match, inner) {
    var token = inner.replace(/\\(.)/g, function (m, c) { return escapes[c] || c; });
    return "`" + monoReport.chipText(token) + "`";
  });
};

// Running text with its whitespace visible, as DOM nodes: every space as ·, tab as ⇥, carriage return
// as ␍ and newline as ↵ followed by a real line break (class "ws": drawn faint), so that indentation
// and blank lines read exactly as the text holds them.
monoReport.visibleText = function (s) {
  var el = monoReport.el, out = [], plain = "";
  var marks = {" ": "·", "\t": "⇥", "\r": "␍", "\n": "↵"};
  for (var i = 0; i < s.length; i++) {
    var mark = marks[s[i]];
    if (mark === undefined) { plain += s[i]; continue; }
    if (plain) { out.push(plain); plain = ""; }
    out.push(el("span", {class: "ws", text: mark}));
    if (s[i] === "\n") out.push("\n");
  }
  if (plain) out.push(plain);
  return out;
};

// Text for Plotly labels (ticks, hover text, names): Plotly reads them as a small HTML dialect (tags
// such as <a href>, <span style>, <br>, and the entities &amp; &lt; &gt;), so & < > are escaped and
// a token string shows as the characters it is. No tag can form without <, so quotes stay as they are.
monoReport.plotText = function (s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
};

monoReport.fmt = function (x, digits) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  digits = digits || 3;
  var a = Math.abs(x);
  if (a === 0) return "0";
  if (a >= 1e5 || a < 1e-3) return x.toExponential(Math.max(0, digits - 1));
  return String(Number(x.toPrecision(digits)));
};

monoReport.pct = function (x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  if (x === 0) return "0%";
  var p = x * 100;
  if (p < 0.01) return p.toPrecision(2) + "%";
  return (p < 1 ? p.toPrecision(2) : p.toFixed(p < 10 ? 2 : 1)) + "%";
};

monoReport.int = function (n) {
  return Number(n).toLocaleString("en-US");
};

// A token chip: the token's visible text, its exact string (JSON-quoted) on hover.
monoReport.chip = function (s, cls, extraTitle) {
  return monoReport.el("span", {class: "chip" + (cls ? " " + cls : ""), text: monoReport.chipText(s),
    title: JSON.stringify(s) + (extraTitle ? "  " + extraTitle : "")});
};

// Token `id` as a string of the vocabulary (monoReport.vocab, from data/vocab.js); "<id>" beyond it.
monoReport.tokenString = function (id) {
  var s = (monoReport.vocab || [])[id];
  return s === undefined ? "<" + id + ">" : s;
};

// Whether token `id` is a byte fragment: part of a multi-byte UTF-8 character, shown as \xNN, which
// literal text can also hold; the analysis lists them (meta.fragment_ids). The set is built once meta is there.
monoReport.isFragment = function (id) {
  if (!monoReport.meta) return false;
  if (!monoReport.fragments) {
    monoReport.fragments = {};
    (monoReport.meta.fragment_ids || []).forEach(function (i) { monoReport.fragments[i] = true; });
  }
  return monoReport.fragments[id] === true;
};

// A chip for token `id`; a byte fragment gets a dashed outline and says so on hover.
monoReport.tokenChip = function (id, cls, extraTitle) {
  var fragment = monoReport.isFragment(id);
  var title = [fragment ? "byte fragment: part of a multi-byte UTF-8 character" : "", extraTitle || ""].filter(Boolean).join("  ");
  return monoReport.chip(monoReport.tokenString(id), [cls, fragment ? "fragment" : ""].filter(Boolean).join(" "), title);
};

// A note under a token list that holds byte fragments (null when `ids` holds none).
monoReport.fragmentNote = function (ids) {
  var n = ids.filter(monoReport.isFragment).length;
  if (!n) return null;
  return monoReport.el("div", {class: "muted fragment-note", text: n + " of these (dashed) " + (n > 1 ? "are byte fragments" : "is a byte fragment") +
    ": part of a multi-byte UTF-8 character, written \\xNN"});
};

// What feature `id` is about, as a span: its label (whitespace shown as in chips), else its top tokens.
monoReport.about = function (id) {
  var row = (monoReport.rows || [])[id], span = monoReport.el("span", {class: "about"});
  if (row && row[7]) span.textContent = monoReport.labelText(row[7]);
  else if (row) row[5].forEach(function (t) { span.appendChild(monoReport.tokenChip(t)); });
  return span;
};

// One example: its tokens, each shaded by the feature's activation on it (thousandths of the max),
// the value on hover, the peak outlined.
monoReport.example = function (value, window, vocab, featureMax, scale, peakIndex, extra) {
  var el = monoReport.el;
  var tokens = window[0], acts = window[1];
  var text = el("div", {class: "text"});
  for (var k = 0; k < tokens.length; k++) {
    if (tokens[k] < 0) continue;  // padding past the sequence's edge
    var s = vocab[tokens[k]];
    if (s === undefined) s = "<" + tokens[k] + ">";
    var a = acts[k] / scale;
    var span = el("span", {class: "tok", text: monoReport.showToken(s)});
    if (a > 0) {
      span.style.background = "rgba(240, 110, 30, " + (0.12 + 0.78 * a).toFixed(3) + ")";
    }
    span.title = JSON.stringify(s) + "  activation " + monoReport.fmt(a * featureMax);
    span.dataset.act = String(a * featureMax);
    if (k === peakIndex) span.classList.add("peak");
    if (monoReport.special[tokens[k]]) span.classList.add("special");
    if (monoReport.isFragment(tokens[k])) span.classList.add("fragment");
    text.appendChild(span);
  }
  return el("div", {class: "example"}, [el("div", {class: "val", text: monoReport.fmt(value), title: extra || ""}), text]);
};

monoReport.topbar = function (active) {
  var el = monoReport.el, meta = monoReport.meta || {};
  var link = function (href, name, key) { return el("a", {href: href, class: active === key ? "active" : "", text: name}); };
  var where = [meta.model, meta.hook, meta.architecture ? meta.architecture + " SAE · " + monoReport.int(meta.d_sae) + " features" : null]
    .filter(Boolean).join("  ·  ");
  return el("header", {class: "topbar"}, [
    el("span", {class: "brand", text: "monosemantic"}),
    el("nav", {}, [link("index.html", "Features", "index"), link("feature.html", "Feature", "feature"),
      meta.neurons ? link("neurons.html", "Neurons", "neurons") : null, link("prompt.html", "Prompt", "prompt"),
      link("model.html", "Model", "model"), meta.scorecard ? link("scorecard.html", "Scorecard", "scorecard") : null]),
    el("span", {class: "where", text: where, title: where}),
  ]);
};

monoReport.stat = function (value, key, title) {
  return monoReport.el("div", {class: "stat", title: title || ""}, [
    monoReport.el("div", {class: "v", text: value}), monoReport.el("div", {class: "k", text: key})]);
};

// Plotly starts loading once the page's text has been painted, on the pages that plot (<body data-plotly>),
// so that the text does not wait for it: a chart asked for before it has loaded is drawn when it loads.
monoReport.pendingPlots = [];
monoReport.newPlot = function (div, data, layout, config) {
  if (window.Plotly) Plotly.newPlot(div, data, layout, config);
  else monoReport.pendingPlots.push([div, data, layout, config]);
};
monoReport.plotlyLoaded = function () {
  monoReport.pendingPlots.splice(0).forEach(function (a) { Plotly.newPlot(a[0], a[1], a[2], a[3]); });
};
document.addEventListener("DOMContentLoaded", function () {
  var src = document.body.dataset.plotly;
  if (!src) return;
  requestAnimationFrame(function () {  // the frame with the page's text, then Plotly
    setTimeout(function () {
      var script = document.createElement("script");
      script.src = src;
      script.onload = monoReport.plotlyLoaded;
      document.head.appendChild(script);
    }, 0);
  });
});

monoReport.plotConfig = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
monoReport.plotLayout = function (extra) {
  var base = {margin: {l: 48, r: 12, t: 8, b: 40}, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    font: {family: "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 12, color: "#1d2330"},
    bargap: 0.05, showlegend: false};
  for (var k in extra) base[k] = extra[k];
  return base;
};

monoReport.readJSON = function (id) {
  return JSON.parse(document.getElementById(id).textContent);
};
