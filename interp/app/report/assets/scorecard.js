// The scorecard page: SAE features against the model's neurons on concepts with exact ground truth,
// beside a random-init control; universality across seeds, feature splitting across widths and logit
// consistency. Everything shown is in scorecard.json (interp.scorecard).
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  R.meta = R.readJSON("report-meta");
  var meta = R.meta, card = R.readJSON("report-scorecard");
  var app = document.getElementById("app");
  app.appendChild(R.topbar("scorecard"));
  var main = el("main");
  app.appendChild(main);
  main.appendChild(el("h1", {text: "Scorecard · is it monosemantic?"}));
  var f3 = function (x) { return R.fmt(x, 2); };
  var sides = ["features", "neurons", "control_features", "control_neurons"];
  var sideName = {features: "SAE features", neurons: "neurons", control_features: "control features", control_neurons: "control neurons"};
  var summary = card.summary || {}, median = summary.median || {};
  var controlRows = card.control ? card.control.concepts : null;

  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(card.scored_tokens), "scored tokens", "BOS positions are not scored; " + R.int(card.selection_tokens) +
      " choose units and thresholds, " + R.int(card.test_tokens) + " score them"),
    R.stat(String(summary.concepts_scored) + " / " + card.concepts.length, "concepts scored",
      "a concept needs " + card.config.min_positives + " positives in each half"),
  ].concat(sides.filter(function (s) { return median[s]; }).map(function (s) {
    return R.stat(f3(median[s].f1), "median best F1 · " + sideName[s]);
  }))));
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {text: "How to read it"}),
    el("p", {text: card.headline.why}),
    el("p", {text: "Ground truth: " + card.rules["positive token"] + ". Firing: " + card.rules.firing + ". " +
      card.rules.selection + ". Probe: " + card.rules.probe + ". The control is " + (card.control ?
      "an SAE trained with the same settings on the model at initialisation (" + card.control.model_spec + ")." :
      "missing: pass --control-model and --control-sae.")}),
    winsTable(),
  ]));

  function winsTable() {
    var rows = [];
    Object.keys(summary.wins || {}).forEach(function (pair) {
      var tally = summary.wins[pair];
      Object.keys(tally).forEach(function (measure) {
        var t = tally[measure], other = Object.keys(t).filter(function (k) { return k !== "features" && k !== "ties"; })[0];
        rows.push(el("tr", {}, [el("td", {text: "SAE features vs " + other.replace("_", " ")}), el("td", {text: measure}),
          el("td", {class: "num", text: String(t.features)}), el("td", {class: "num", text: String(t[other])}),
          el("td", {class: "num", text: String(t.ties)})]));
      });
    });
    return el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["comparison", "measure", "features win", "other wins", "ties"]
      .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, rows)]);
  }

  // --- the concept table ---------------------------------------------------------------------------
  function unitCell(unit, kind) {
    if (!unit) return el("td", {class: "muted", text: "–"});
    var href = kind === "feature" ? "feature.html#" + unit.id : (kind === "neuron" && meta.neurons ? "neuron.html#" + unit.id : null);
    var name = (kind === "feature" ? "F" : kind === "neuron" ? "N" : kind === "cfeature" ? "cF" : "cN") + unit.id;
    var tip = "AUROC " + f3(unit.auroc) + " · F1 " + f3(unit.f1) + " at ≥ " + R.fmt(unit.threshold) + " · precision " +
      f3(unit.precision) + ", recall " + f3(unit.recall) + " when > 0 (" + R.int(unit.fires) + " firings)";
    return el("td", {title: tip}, [href ? el("a", {href: href, text: name}) : name, " ", el("b", {text: f3(unit.f1)})]);
  }
  var head = ["concept", "positives", "F1 marking every token", "best feature F1", "best neuron F1", "control feature F1", "control neuron F1",
    "best AUROC feat / neur", "probe F1 k=1 feat / neur", "k=5 feat / neur", "winner (F1)"];
  var body = el("tbody");
  card.concepts.forEach(function (c, i) {
    var ctl = controlRows ? controlRows[i] : null;
    if (!c.scored) {
      body.appendChild(el("tr", {class: "muted"}, [el("td", {text: c.name, title: c.description}),
        el("td", {class: "num", text: R.int(c.positives)}), el("td", {colspan: "9", text: "too few positives to score"})]));
      return;
    }
    var fw = c.best_feature.f1, nw = c.best_neuron.f1;
    var winner = fw > nw ? "features" : nw > fw ? "neurons" : "tie";
    body.appendChild(el("tr", {}, [
      el("td", {text: c.name, title: c.description + " (" + c.source + ")"}),
      el("td", {class: "num", text: R.int(c.positives), title: "of " + R.int(c.tokens) + " test tokens"}),
      el("td", {class: "num muted", text: f3(c.all_tokens_f1), title: "the F1 of a detector that marks every token: a best F1 near it says nothing"}),
      unitCell(c.best_feature, "feature"), unitCell(c.best_neuron, "neuron"),
      unitCell(ctl && ctl.best_feature, "cfeature"), unitCell(ctl && ctl.best_neuron, "cneuron"),
      el("td", {class: "num", text: f3(c.best_feature_by_auroc.auroc) + " / " + f3(c.best_neuron_by_auroc.auroc)}),
      el("td", {class: "num", text: f3(c.probe.features["1"].f1) + " / " + f3(c.probe.neurons["1"].f1)}),
      el("td", {class: "num", text: f3(c.probe.features["5"].f1) + " / " + f3(c.probe.neurons["5"].f1)}),
      el("td", {class: "winner " + winner, text: winner}),
    ]));
  });
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Concepts ", el("span", {class: "sub", text: "— test-token F1 of the best unit of each kind (hover for AUROC, precision, recall)"})]),
    el("table", {class: "grid", id: "concept-table"}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {text: h}); }))]), body]),
  ]));

  // --- specificity histograms ----------------------------------------------------------------------------
  var scored = card.concepts.filter(function (c) { return c.scored; });
  if (scored.length) {
    var picker = el("select", {id: "concept-pick"}, scored.map(function (c) { return el("option", {value: c.name, text: c.name}); }));
    var plots = el("div", {class: "pair"}), note = el("p", {class: "sub"});
    main.appendChild(el("section", {class: "panel"}, [
      el("h2", {}, ["Specificity ", el("span", {class: "sub", text: "— the best unit's test activations, stacked by whether the token is in the concept"})]),
      picker, note, plots]));
    var draw = function () {
      var c = scored.filter(function (x) { return x.name === picker.value; })[0];
      plots.textContent = "";
      var parts = [];
      [["feature", c.feature_histogram, c.best_feature], ["neuron", c.neuron_histogram, c.best_neuron]].forEach(function (spec) {
        var h = spec[1], div = el("div", {class: "plot", style: "height: 260px"});
        plots.appendChild(div);
        var centres = h.edges.slice(0, -1).map(function (e, k) { return (e + h.edges[k + 1]) / 2; });
        R.newPlot(div, [
          {type: "bar", name: "in concept", x: centres, y: h.positive, marker: {color: "#e8702a"}},
          {type: "bar", name: "not in concept", x: centres, y: h.negative, marker: {color: "#9aa3b5"}},
        ], R.plotLayout({barmode: "stack", showlegend: true, legend: {orientation: "h", x: 0, y: 1.15},
          title: {text: R.plotText(spec[0] + " " + spec[2].id + " on " + c.name), font: {size: 12}},
          margin: {l: 48, r: 12, t: 40, b: 40}, xaxis: {title: {text: "activation"}}, yaxis: {type: "log", title: {text: "tokens"}}}), R.plotConfig);
        parts.push(spec[0] + " " + spec[2].id + ": exactly 0 on " + R.int(h.zero_positive) + " in-concept and " +
          R.int(h.zero_negative) + " other tokens");
      });
      note.textContent = parts.join("; ") + ".";
    };
    picker.addEventListener("change", draw);
    draw();
  }

  // --- universality and logit consistency -----------------------------------------------------------------
  var u = card.universality || {};
  var uni = el("section", {class: "panel"}, [el("h2", {}, ["Universality ", el("span", {class: "sub",
    text: "— each unit's largest correlation with any unit of a second run with another seed, on " + R.int(u.tokens || 0) + " test tokens"})])]);
  var traces = [];
  [["features", "#e8702a"], ["neurons", "#1c64d8"]].forEach(function (spec) {
    var part = u[spec[0]];
    if (!part) {
      uni.appendChild(el("p", {class: "sub", text: spec[0] + ": " + (u[spec[0] + "_missing"] || "no second run")}));
      return;
    }
    uni.appendChild(el("p", {text: spec[0] + ": median " + f3(part.median) + " over " + R.int(part.alive) + " units that vary"}));
    var h = part.histogram;
    traces.push({type: "bar", name: spec[0], x: h.edges.slice(0, -1).map(function (e, k) { return (e + h.edges[k + 1]) / 2; }),
      y: h.counts, marker: {color: spec[1]}, opacity: 0.75});
  });
  main.appendChild(uni);
  if (traces.length) {
    var upl = el("div", {class: "plot", style: "height: 240px"});
    uni.appendChild(upl);
    R.newPlot(upl, traces, R.plotLayout({barmode: "overlay", showlegend: true, margin: {l: 48, r: 12, t: 20, b: 40},
      xaxis: {title: {text: "max correlation"}, range: [0, 1]}, yaxis: {title: {text: "units"}}}), R.plotConfig);
  }
  var lc = card.logit_consistency || {};
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Logit consistency ", el("span", {class: "sub", text: "— share of a unit's " + lc.examples +
      " top examples whose actual next token is among the " + lc.promoted + " tokens the unit promotes most"})]),
    el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["units", "median", "mean"].map(function (h) { return el("th", {text: h}); }))]),
      el("tbody", {}, sides.filter(function (s) { return lc[s]; }).map(function (s) {
        return el("tr", {}, [el("td", {text: sideName[s]}), el("td", {class: "num", text: f3(lc[s].median)}), el("td", {class: "num", text: f3(lc[s].mean)})]);
      }))]),
  ]));

  // --- feature splitting ---------------------------------------------------------------------------------
  var sp = card.splitting;
  if (sp) {
    var section = el("section", {class: "panel", id: "splitting"}, [el("h2", {}, ["Feature splitting ", el("span", {class: "sub",
      text: "— SAEs of " + sp.widths.join(", ") + " features on the same activations; each feature's parent is the narrower SAE's feature of largest decoder cosine"})])]);
    section.appendChild(el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["from", "to", "median cosine", "median co-activation", "cosine > 0.7"]
      .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, sp.pairs.map(function (p) {
      return el("tr", {}, [el("td", {text: String(p.from)}), el("td", {text: String(p.to)}), el("td", {class: "num", text: f3(p.median_cosine)}),
        el("td", {class: "num", text: f3(p.median_coactivation)}), el("td", {class: "num", text: R.pct(p["share_cosine_above_0.7"])})]);
    }))]));
    var input = el("input", {type: "number", min: "0", max: String(sp.widths[0] - 1), id: "family-id"});
    var tree = el("div", {class: "family", id: "family"});
    section.appendChild(el("p", {}, ["Family of feature ", input, " of the " + sp.widths[0] + "-feature SAE (Enter), or pick one of the largest: "]));
    var largest = sp.families.map(function (f) { return [count(f), f.id]; }).sort(function (a, b) { return b[0] - a[0]; }).slice(0, 12);
    section.appendChild(el("p", {}, largest.map(function (pair) {
      return el("button", {type: "button", text: "#" + pair[1] + " (" + pair[0] + ")", onclick: function () { showFamily(pair[1]); }});
    })));
    section.appendChild(tree);
    main.appendChild(section);
    input.addEventListener("keydown", function (e) { if (e.key === "Enter") showFamily(Number(input.value)); });
    var hashId = /^#family-(\d+)$/.exec(location.hash);
    showFamily(hashId ? Number(hashId[1]) : largest.length ? largest[0][1] : 0);
  }

  function count(node) {
    return (node.children || []).reduce(function (n, c) { return n + 1 + count(c); }, 0);
  }

  function node(level, id, extra) {
    var info = sp.features[level], width = sp.widths[level];
    var label = width === sp.main_width ? el("a", {href: "feature.html#" + id, text: width + "/#" + id}) : el("span", {text: width + "/#" + id});
    var tokens = (info.top_tokens[id] || []).map(function (t) { return R.chip(t); });
    return el("div", {class: "member"}, [label, " ", el("span", {class: "sub", text: "density " + R.pct(info.density[id]) + (extra || "")}), " "].concat(tokens));
  }

  function branch(level, children) {
    return el("div", {class: "children"}, children.map(function (c) {
      return el("div", {}, [node(level, c.id, " · cosine " + f3(c.cosine) + " · co-activation " + f3(c.coactivation)), branch(level + 1, c.children || [])]);
    }));
  }

  function showFamily(id) {
    if (!(id >= 0 && id < sp.widths[0])) return;
    var family = sp.families[id];
    tree.textContent = "";
    tree.appendChild(node(0, id));
    tree.appendChild(branch(1, family.children));
    if (history.replaceState) history.replaceState(null, "", "#family-" + id);
  }
})();
