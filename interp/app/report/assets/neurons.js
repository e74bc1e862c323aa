// The neuron index: every MLP neuron sorted by polysemanticity (the effective number of SAE features
// that drive it), and the headline comparison: label scores of neurons against features.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  var meta = R.meta, rows = R.rows || [], neurons = R.neurons, scores = R.neuronScores;

  var app = document.getElementById("app");
  app.appendChild(R.topbar("neurons"));
  var main = el("main");
  app.appendChild(main);
  main.appendChild(el("h1", {text: "Neurons · " + meta.title}));

  var neff = neurons.map(function (n) { return n.neff; }).sort(function (a, b) { return a - b; });
  var summary = scores.summary;
  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(neurons.length), "MLP neurons"),
    R.stat(R.fmt(neff[Math.floor(neff.length / 2)]), "median effective features per neuron"),
    R.stat(R.fmt(summary.features.median), "median label score, features", R.int(summary.features.count) + " labelled features"),
    R.stat(R.fmt(summary.neurons.median), "median label score, neurons", R.int(summary.neurons.count) + " labelled neurons"),
  ]));

  var scoreTable = el("table", {class: "list", id: "score-summary"});
  scoreTable.appendChild(el("tr", {}, ["", "count", "mean", "median", "quartiles", "≥ 0.9", "≥ 0.75"].map(function (h) {
    return el("td", {class: h ? "num" : "", text: h});
  })));
  [["features", summary.features], ["neurons", summary.neurons]].forEach(function (pair) {
    var s = pair[1];
    scoreTable.appendChild(el("tr", {"data-who": pair[0]}, [el("td", {text: pair[0]}),
      el("td", {class: "num", text: R.int(s.count)}), el("td", {class: "num", text: R.fmt(s.mean)}),
      el("td", {class: "num", text: R.fmt(s.median)}), el("td", {class: "num", text: R.fmt(s.q25) + " – " + R.fmt(s.q75)}),
      el("td", {class: "num", text: R.pct(s["share_ge_0.9"])}), el("td", {class: "num", text: R.pct(s["share_ge_0.75"])})]));
  });
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Label scores: features against neurons ",
      el("span", {class: "sub", text: "— held-out detection AUROC of each label (0.5 = chance, 1 = perfect); the claim under test: SAE features are more interpretable than the neurons they came from"})]),
    el("div", {id: "score-plot", class: "plot", style: "height: 260px"}), scoreTable]));
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Polysemanticity ", el("span", {class: "sub", text: "— effective number of features driving each neuron, exp(entropy) of their shares of its activation mass"})]),
    el("div", {id: "neff-plot", class: "plot"})]));

  function featureLink(f, share) {
    return el("span", {class: "driver"}, [el("a", {href: "feature.html#" + f, text: "#" + f}), " ", R.about(f),
      share === undefined ? null : el("span", {class: "muted", text: " " + R.pct(share)})]);
  }

  var filterBox = el("input", {type: "search", id: "neuron-filter", placeholder: "Filter: id, label or driving feature…", "aria-label": "filter neurons"});
  var count = el("span", {class: "count", id: "neuron-count"});
  main.appendChild(el("div", {class: "toolbar"}, [filterBox, count]));
  var columns = [{key: "id", name: "Neuron"}, {key: "neff", name: "Effective features"}, {key: "score", name: "Own label score · positives"},
                 {key: "label", name: "Own label"}, {key: "drivers", name: "Driven by (share of its activation mass)"}];
  var state = {sort: "neff", dir: -1, filter: ""};
  var head = el("tr", {class: "nhdr"});
  columns.forEach(function (c) {
    var th = el("th", {"data-key": c.key, text: c.name,
      title: c.key === "score" ? "sort by the label score's 95% lower bound" : "sort by " + c.name.toLowerCase()});
    if (c.key !== "drivers" && c.key !== "label") th.addEventListener("click", function () {
      if (state.sort === c.key) state.dir = -state.dir; else { state.sort = c.key; state.dir = c.key === "id" ? 1 : -1; }
      update();
    });
    head.appendChild(th);
  });
  var body = el("tbody", {id: "neuron-rows"});
  main.appendChild(el("div", {class: "panel"}, [el("table", {class: "list ntable"}, [el("thead", {}, [head]), body])]));

  neurons.forEach(function (n) {
    n.search = ("#" + n.id + " " + (n.label ? R.labelText(n.label.text) : "") + " " + n.drivers.map(function (d) {
      return "#" + d[0] + " " + R.labelText((rows[d[0]] || [])[7]);
    }).join(" ")).toLowerCase();
  });
  function value(n, key) {
    if (key === "score") return n.label && n.label.lower !== null ? n.label.lower : null;  // the 95% lower bound
    return n[key];
  }
  function update() {
    var terms = state.filter.trim().toLowerCase().split(/\s+/).filter(Boolean);
    var view = neurons.filter(function (n) {
      return terms.every(function (t) { return n.search.indexOf(t) >= 0; });
    });
    view.sort(function (a, b) {  // unscored neurons last in either direction
      var x = value(a, state.sort), y = value(b, state.sort);
      if (x === null || y === null) return (x === null) - (y === null) || a.id - b.id;
      return state.dir * (x - y) || a.id - b.id;
    });
    Array.prototype.forEach.call(head.children, function (th) {
      th.setAttribute("aria-sort", th.dataset.key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    });
    body.textContent = "";
    view.forEach(function (n) {
      body.appendChild(el("tr", {"data-id": n.id}, [
        el("td", {}, [el("a", {href: "neuron.html#" + n.id, text: "neuron " + n.id})]),
        el("td", {class: "num", text: R.fmt(n.neff)}),
        el("td", {class: "num", text: n.label && n.label.score !== null ? R.fmt(n.label.score, 2) + " · " + R.int(n.label.positives || 0) : "–",
          title: n.label && n.label.lower !== null ? "95% lower bound " + R.fmt(n.label.lower, 2) : ""}),
        el("td", {text: n.label ? R.labelText(n.label.text) : ""}),
        el("td", {}, n.drivers.slice(0, 3).map(function (d) { return featureLink(d[0], d[1]); })),
      ]));
    });
    count.textContent = "showing " + R.int(view.length) + " of " + R.int(neurons.length);
  }
  var timer = null;
  filterBox.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { state.filter = filterBox.value; update(); }, 60);
  });
  update();

  var bins = {start: 0, end: 1.0001, size: 0.025};
  R.newPlot("score-plot", [
    {type: "histogram", x: scores.features, name: "features", histnorm: "probability", xbins: bins, opacity: 0.65, marker: {color: "#f08c4f"},
     hovertemplate: "features: AUROC %{x}<br>%{y:.1%} of them<extra></extra>"},
    {type: "histogram", x: scores.neurons, name: "neurons", histnorm: "probability", xbins: bins, opacity: 0.65, marker: {color: "#5b8def"},
     hovertemplate: "neurons: AUROC %{x}<br>%{y:.1%} of them<extra></extra>"},
  ], R.plotLayout({barmode: "overlay", showlegend: true, legend: {x: 0.02, y: 0.98},
    xaxis: {title: {text: "label score (held-out detection AUROC)"}, range: [0, 1.02]}, yaxis: {title: {text: "share"}, tickformat: ".0%"}}), R.plotConfig);
  R.newPlot("neff-plot", [{type: "histogram", x: neurons.map(function (n) { return n.neff; }), nbinsx: 50, marker: {color: "#5b8def"},
    hovertemplate: "%{x} effective features<br>%{y} neurons<extra></extra>"}],
    R.plotLayout({xaxis: {title: {text: "effective number of driving features"}}, yaxis: {title: {text: "neurons"}}}), R.plotConfig);
})();
