// One page for every MLP neuron: neuron.html#J. What drives it (SAE features, by their share of its
// activation mass), its own label, and its top examples grouped by the feature driving each peak.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  var meta = R.meta, rows = R.rows || [], vocab = R.vocab, neurons = R.neurons;

  var app = document.getElementById("app");
  app.appendChild(R.topbar("neurons"));
  var main = el("main");
  app.appendChild(main);

  var about = R.about;
  function featureLink(f) { return el("a", {href: "feature.html#" + f, text: "feature " + f}); }
  // "0.91 · 31": a label score and the held-out positives behind it
  function evidence(score, positives) {
    if (score === null || score === undefined) return "unscored";
    return R.fmt(score, 2) + (positives ? " · " + R.int(positives) : "");
  }
  function panel(title, sub, children) {
    var h = el("h2", {}, [title]);
    if (sub) h.appendChild(el("span", {class: "sub", text: " — " + sub}));
    return el("section", {class: "panel"}, [h].concat(children));
  }

  // "Neuron 137 takes 31% of its activation mass from feature 812 (label), 12% from feature 40 (label)
  // and 9% from feature 2291 (label); 8 features drive it, 3.2 effectively."
  function sentence(n) {
    var shown = n.drivers.slice(0, 3);
    if (!shown.length) return el("p", {id: "neuron-sentence", text: "Neuron " + n.id + ": no feature puts positive activation mass into it."});
    var parts = ["Neuron " + n.id + " takes "];
    shown.forEach(function (d, k) {
      if (k > 0) parts.push(k === shown.length - 1 ? " and " : ", ");
      parts.push(el("b", {text: R.pct(d[1])}), k === 0 ? " of its activation mass from " : " from ", featureLink(d[0]), " (", about(d[0]), ")");
    });
    parts.push("; " + (n.drivers.length < meta.drivers_listed ? n.drivers.length : meta.drivers_listed + " or more") +
      " feature" + (n.drivers.length > 1 ? "s drive" : " drives") + " it, " + R.fmt(n.neff) + " effectively.");
    return el("p", {id: "neuron-sentence", class: "sentence"}, parts);
  }

  function render(n) {
    main.textContent = "";
    document.title = "Neuron " + n.id + " · " + meta.title;
    var head = el("div", {class: "fhead"}, [el("h1", {id: "neuron-title", text: "Neuron " + n.id})]);
    if (n.label) {
      head.appendChild(el("span", {class: "label-chip", text: R.labelText(n.label.text), title: n.label.text}));
      var scored = n.label.score !== null;
      head.appendChild(el("span", {class: "label-score", id: "label-score", text: scored ? "score " + R.fmt(n.label.score, 2) +
        " from " + R.int(n.label.positives || 0) + " held-out firings (95% lower bound " + R.fmt(n.label.lower, 2) + ")" : "unscored label",
        title: "held-out detection AUROC of the label's rule: 0.5 is chance, 1 perfect"}));
    }
    head.appendChild(el("div", {class: "fnav"}, [
      n.id > 0 ? el("a", {class: "btn", href: "#" + (n.id - 1), text: "← " + (n.id - 1)}) : null,
      n.id < neurons.length - 1 ? el("a", {class: "btn", href: "#" + (n.id + 1), text: (n.id + 1) + " →"}) : null,
      el("a", {class: "btn", href: "neurons.html", text: "All neurons"})]));
    main.appendChild(head);
    main.appendChild(sentence(n));
    main.appendChild(el("div", {class: "stats"}, [
      R.stat(R.fmt(n.neff), "effective features driving it"),
      R.stat(n.label ? evidence(n.label.score, n.label.positives) : "–", "own label score · held-out positives"),
      R.stat(R.pct(n.density), "density", R.int(n.fire_count) + " tokens with a positive activation"),
      R.stat(R.fmt(n.max), "max activation"),
      R.stat(R.fmt(n.mean), "mean when positive"),
    ]));

    var left = el("div"), right = el("div");
    main.appendChild(el("div", {class: "grid2"}, [left, right]));
    var groups = el("div", {id: "neuron-groups"});
    n.groups.forEach(function (g) {
      var header = g[0] >= 0 ? [featureLink(g[0]), " ", about(g[0])] : [el("span", {class: "muted", text: "no feature recorded"})];
      groups.appendChild(el("div", {class: "group-head", "data-feature": g[0]}, header.concat([
        el("span", {class: "muted", text: "  " + g[1].length + " example" + (g[1].length > 1 ? "s" : "")})])));
      g[1].forEach(function (k) {
        var e = n.top[k];
        var drivers = e[3].map(function (d) { return "#" + d[0] + " +" + R.fmt(d[1]); }).join(", ");
        groups.appendChild(R.example(e[0], e[2], vocab, n.max, meta.act_scale, meta.window_left,
          "fires on " + R.pct(e[1]) + " of this sequence; at the peak: " + drivers));
      });
    });
    if (!n.groups.length) groups.appendChild(el("div", {class: "empty", text: "no positive activations"}));
    left.appendChild(panel("Top activations, grouped by the feature driving the peak", "one example per sequence; shade = the neuron's activation", [groups]));

    var table = el("table", {class: "list", id: "neuron-drivers"});
    n.drivers.forEach(function (d) {
      var row = rows[d[0]] || [];
      table.appendChild(el("tr", {"data-feature": d[0]}, [el("td", {}, [featureLink(d[0])]), el("td", {}, [about(d[0])]),
        el("td", {class: "num", title: "label score · held-out positives", text: evidence(row[8], row[9])}),
        el("td", {class: "num"}, [R.pct(d[1]), el("span", {class: "bar", style: "width:" + Math.max(2, 70 * d[1]) + "px"})])]));
    });
    right.appendChild(panel("Driven by", "its " + meta.drivers_listed + " largest drivers: each feature's share of the positive " +
      "activation mass put into this neuron (the same share its page lists), its label score · held-out positives",
      [n.drivers.length ? table : el("div", {class: "empty", text: "no feature drives it"})]));
    if (n.logits) {
      var chips = function (list, cls) { return el("div", {}, list.map(function (t) { return R.tokenChip(t[0], cls, R.fmt(t[1])); })); };
      right.appendChild(panel("Logit effects", "its output weights through the unembedding", [
        el("div", {class: "muted", text: "promotes"}), chips(n.logits.top, "pos"),
        el("div", {class: "muted", text: "suppresses"}), chips(n.logits.bottom, "neg"),
        R.fragmentNote(n.logits.top.concat(n.logits.bottom).map(function (t) { return t[0]; }))]));
    }
    window.scrollTo(0, 0);
  }

  function route() {
    var id = parseInt(window.location.hash.slice(1), 10);
    if (!(id >= 0 && id < neurons.length)) {
      if (window.location.hash.length > 1) {
        main.textContent = "";
        main.appendChild(el("div", {class: "panel"}, [el("p", {text: "There is no neuron " + window.location.hash.slice(1) +
          "; neurons are 0–" + (neurons.length - 1) + "."})]));
        return;
      }
      id = 0;
    }
    render(neurons[id]);
  }
  window.addEventListener("hashchange", route);
  route();
})();
