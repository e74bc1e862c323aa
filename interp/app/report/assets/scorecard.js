// The scorecard page: SAE features against the model's neurons on concepts with exact ground truth,
// beside trivial baselines and a random-init control, every figure with its document-bootstrap interval;
// unit purity, absorption, universality across models, the dictionaries' frontier, feature splitting and
// logit consistency. Everything shown is in scorecard.json (interp.features.scorecard).
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
  var f2 = function (x) { return R.fmt(x, 2); };
  var sides = ["features", "neurons", "control_features", "control_neurons"];
  var sideName = {features: "SAE features", neurons: "neurons", control_features: "control features", control_neurons: "control neurons"};
  var sideColor = {features: "#e8702a", neurons: "#1c64d8", control_features: "#f3b58b", control_neurons: "#8fb1ec"};
  var present = sides.filter(function (s) { return card.logit_consistency[s] !== undefined; });
  var kinds = card.summary.kinds, context = kinds.context;
  // a figure with its 95% interval: "0.42 [0.35, 0.50]"
  var ci = function (x) { return !x || x.value === null ? "–" : f2(x.value) + " [" + f2(x.low) + ", " + f2(x.high) + "]"; };

  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(card.scored_tokens), "scored tokens", "from " + card.documents + " documents in " + card.folds +
      " folds of " + card.fold_tokens.map(R.int).join(" / ") + " tokens; BOS positions are not scored"),
    R.stat(String(context.concepts) + " + " + String(kinds["token identity"].concepts), "context + token-identity concepts",
      "a concept is token identity when a lookup of token ids reaches F1 ≥ " + card.summary.token_solved_at + " on it"),
  ].concat(present.map(function (s) {
    var m = context.medians[s];
    return R.stat(m ? f2(m.k1.skill.value) : "–", "median skill · " + sideName[s], "on context concepts, k = 1: " + (m ? ci(m.k1.skill) : ""));
  }))));
  var rules = card.rules;
  main.appendChild(el("section", {class: "panel", id: "verdicts"}, [
    el("h2", {}, ["Verdicts ", el("span", {class: "sub", text: "— on context concepts; stated only where the interval excludes a tie"})]),
    comparisonTable(context.comparisons),
    el("p", {class: "sub", text: "Skill: " + rules.skill + ". Folds: " + rules.folds + ". Intervals: " + rules.intervals +
      ". Masking: " + rules.masking + ". The control is " + (card.control ?
      "an SAE trained with the same settings on the model at initialisation (" + card.control.model_spec + ")." :
      "missing: pass --control-model and --control-sae.")}),
    el("h3", {text: "On token-identity concepts"}),
    comparisonTable(kinds["token identity"].comparisons),
  ]));

  function comparisonTable(rows) {
    if (!rows || !rows.length) return el("p", {class: "sub", text: "no concept of this kind was scored"});
    return el("table", {class: "grid verdicts"}, [el("thead", {}, [el("tr", {}, ["detector", "A", "B", "median skill A", "median skill B",
      "median difference A − B", "A wins", "B wins", "verdict"].map(function (h) { return el("th", {text: h}); }))]),
      el("tbody", {}, rows.map(function (c) {
        var stated = c.verdict.indexOf("ahead") > 0;
        return el("tr", {}, [el("td", {text: c.scorer === "k1" ? "best unit" : "best family"}), el("td", {text: sideName[c.a]}),
          el("td", {text: sideName[c.b]}), el("td", {class: "num", text: ci(c.median_skill_a)}), el("td", {class: "num", text: ci(c.median_skill_b)}),
          el("td", {class: "num", text: ci(c.difference)}), el("td", {class: "num", text: ci(c.wins_a)}), el("td", {class: "num", text: ci(c.wins_b)}),
          el("td", {class: stated ? "winner" : "muted", text: c.verdict})]);
      }))]);
  }

  // --- medians of every detector --------------------------------------------------------------------------
  var scorers = ["k1", "or2", "or4", "or8", "family", "probe1", "probe8"];
  var scorerName = {k1: "best unit", or2: "OR of ≤ 2", or4: "OR of ≤ 4", or8: "OR of ≤ 8", family: "best family", probe1: "probe k=1", probe8: "probe k=8"};
  var medianRows = Object.keys(context.medians || {}).filter(function (k) { return k.indexOf("baseline") >= 0; }).map(function (k) {
    return el("tr", {}, [el("td", {text: k}), el("td", {class: "num", colspan: String(scorers.length), text: "F1 " + ci(context.medians[k].f1)})]);
  }).concat(present.filter(function (s) { return context.medians[s]; }).map(function (s) {
    return el("tr", {}, [el("td", {text: sideName[s]})].concat(scorers.map(function (k) {
      var m = context.medians[s][k];
      return el("td", {class: "num", title: "F1 " + ci(m.f1), text: ci(m.skill)});
    })));
  }));
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Every detector ", el("span", {class: "sub", text: "— median skill over context concepts (hover for F1); " + rules.family + "; " + rules.probe})]),
    el("table", {class: "grid", id: "median-table"}, [el("thead", {}, [el("tr", {}, ["side"].concat(scorers.map(function (k) { return scorerName[k]; }))
      .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, medianRows)]),
  ]));

  // --- the concept table ---------------------------------------------------------------------------
  function unitCell(row, side) {
    var entry = row.sides[side];
    if (!entry) return el("td", {class: "muted", text: "–"});
    var first = entry.chosen[0], k1 = entry.k1;
    var content = [el("b", {text: ci(k1)})];
    if (first) {
      var id = first.units[0];
      var href = side === "features" ? "feature.html#" + id : (side === "neurons" && meta.neurons ? "neuron.html#" + id : null);
      var prefix = {features: "F", neurons: "N", control_features: "cF", control_neurons: "cN"}[side];
      content.unshift(" ");
      content.unshift(href ? el("a", {href: href, text: prefix + id}) : prefix + id);
    }
    var above = k1.value !== null && row.best_baseline.value !== null && k1.value > row.best_baseline.value;
    return el("td", {class: above ? "above" : "", title: "best family " + ci(entry.family) + " · probe k=8 " + ci(entry.probe8) +
      " · units chosen per fold: " + entry.chosen.map(function (c) { return c ? c.units.join("+") : "none"; }).join(" / ")}, content);
  }
  var head = ["concept", "kind", "positives (masked)", "token lookup", "prev + token", "every token"].concat(present.map(function (s) { return sideName[s]; }));
  var body = el("tbody");
  card.concepts.forEach(function (c) {
    if (!c.scored) {
      body.appendChild(el("tr", {class: "muted"}, [el("td", {text: c.name, title: c.description}), el("td", {text: "–"}),
        el("td", {class: "num", text: R.int(c.positives)}), el("td", {colspan: String(3 + present.length), text: "too few positives in some fold to score"})]));
      return;
    }
    body.appendChild(el("tr", {}, [
      el("td", {text: c.name, title: c.description + " (" + c.source + ")"}),
      el("td", {text: c.kind}),
      el("td", {class: "num", text: R.int(c.positives) + " (" + R.int(c.masked_positives) + ")", title: "in " + c.documents_with_positives + " documents"}),
      el("td", {class: "num muted", text: ci(c.baselines.token)}),
      el("td", {class: "num muted", text: ci(c.baselines["prev+token"])}),
      el("td", {class: "num muted", text: ci(c.baselines.every)}),
    ].concat(present.map(function (s) { return unitCell(c, s); }))));
  });
  main.appendChild(el("section", {class: "panel"}, [
    el("h2", {}, ["Concepts ", el("span", {class: "sub", text: "— F1 [95% interval] of each side's best unit, cross-fitted; shaded where above every baseline (hover for families and probes)"})]),
    el("table", {class: "grid", id: "concept-table"}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {text: h}); }))]), body]),
  ]));

  // --- unit purity -------------------------------------------------------------------------------------
  var units = card.units || {};
  var purityRows = present.filter(function (s) { return units[s]; }).map(function (s) {
    var u = units[s];
    return el("tr", {}, [el("td", {text: sideName[s]}), el("td", {class: "num", text: R.int(u.units)}),
      el("td", {class: "num", text: f2(u.purity.median)}), el("td", {class: "num", text: R.pct(u.purity["share_at_least_0.8"])}),
      el("td", {class: "num", text: f2(u.context_purity.median)}), el("td", {class: "num", text: f2(u.token_entropy.median)}),
      el("td", {class: "num", text: f2(u.pearson_r.median)})]);
  });
  var purityPlot = el("div", {class: "plot", style: "height: 260px"}), decilePlot = el("div", {class: "plot", style: "height: 260px"});
  var measures = {purity: "unit purity", context_purity: "unit purity, context concepts", token_entropy: "token entropy (bits)", pearson_r: "Pearson r with its best concept"};
  var measurePick = el("select", {id: "unit-measure"}, Object.keys(measures).map(function (k) { return el("option", {value: k, text: measures[k]}); }));
  main.appendChild(el("section", {class: "panel", id: "purity"}, [
    el("h2", {}, ["Unit purity ", el("span", {class: "sub", text: "— every unit, no choice made: the share of its activation mass on its best concept above that concept's base rate"})]),
    el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["side", "units", "median purity", "purity ≥ 0.8", "median purity, context concepts",
      "median token entropy (bits)", "median Pearson r with its concept"].map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, purityRows)]),
    el("p", {}, ["Distribution over units: ", measurePick]),
    el("div", {class: "pair"}, [purityPlot, decilePlot]),
  ]));
  var centresOf = function (h) { return h.edges.slice(0, -1).map(function (e, k) { return (e + h.edges[k + 1]) / 2; }); };
  var drawMeasure = function () {
    var key = measurePick.value;
    R.newPlot(purityPlot, present.filter(function (s) { return units[s]; }).map(function (s) {
      var h = units[s][key].histogram, total = h.counts.reduce(function (a, b) { return a + b; }, 0) || 1;
      return {type: "scatter", mode: "lines", name: R.plotText(sideName[s]), x: centresOf(h), y: h.counts.map(function (n) { return n / total; }),
        line: {color: sideColor[s], shape: "hvh"}};
    }), R.plotLayout({showlegend: true, legend: {orientation: "h", x: 0, y: 1.15}, margin: {l: 48, r: 12, t: 30, b: 40},
      xaxis: {title: {text: measures[key]}}, yaxis: {title: {text: "share of units"}}}), R.plotConfig);
  };
  measurePick.addEventListener("change", drawMeasure);
  drawMeasure();
  R.newPlot(decilePlot, present.filter(function (s) { return units[s]; }).map(function (s) {
    var d = units[s].specificity_by_decile;
    return {type: "scatter", mode: "lines+markers", name: R.plotText(sideName[s]), x: d.map(function (v, k) { return (k + 1) * 10; }), y: d,
      line: {color: sideColor[s]}};
  }), R.plotLayout({showlegend: false, margin: {l: 48, r: 12, t: 30, b: 40}, title: {text: "specificity by activation", font: {size: 12}},
    xaxis: {title: {text: "activation, % of the unit's maximum (bin end)"}}, yaxis: {title: {text: "share in its best concept"}, range: [0, 1]}}), R.plotConfig);

  // --- absorption ------------------------------------------------------------------------------------------
  var absorbed = card.absorption || {};
  var absorptionRows = present.filter(function (s) { return absorbed[s]; }).map(function (s) {
    var a = absorbed[s];
    return el("tr", {}, [el("td", {text: sideName[s]}), el("td", {text: a.parent + " (" + a.children.length + " children)"}),
      el("td", {class: "num", text: R.int(a.child_positives)}), el("td", {class: "num", text: ci(a.parent_miss_rate)}), el("td", {class: "num", text: ci(a.absorption_rate)})]);
  });
  main.appendChild(el("section", {class: "panel", id: "absorption"}, [
    el("h2", {}, ["Absorption ", el("span", {class: "sub", text: "— child positives the parent concept's unit leaves silent while the child's own unit fires (Chanin et al. 2024)"})]),
    absorptionRows.length ? el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["side", "hierarchy", "child positives", "parent unit misses", "absorbed"]
      .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, absorptionRows)]) : el("p", {class: "sub", text: "no hierarchy in this suite was scored"}),
  ]));

  // --- the frontier -------------------------------------------------------------------------------------
  var frontier = card.frontier || [];
  if (frontier.length) {
    var fplot = el("div", {class: "plot", style: "height: 260px"});
    main.appendChild(el("section", {class: "panel", id: "frontier"}, [
      el("h2", {}, ["Dictionaries on this hook ", el("span", {class: "sub", text: "— fidelity against the headline: pick the dictionary by both"})]),
      el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["features", "k", "L0", "FVU", "CE loss recovered", "median skill, best unit", "median skill, best family"]
        .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, frontier.map(function (r) {
        return el("tr", {}, [el("td", {class: "num", text: R.int(r.d_sae)}), el("td", {class: "num", text: r.k === null ? "–" : String(r.k)}),
          el("td", {class: "num", text: R.fmt(r.l0, 1)}), el("td", {class: "num", text: R.fmt(r.fvu, 3)}), el("td", {class: "num", text: R.fmt(r.ce_loss_recovered, 3)}),
          el("td", {class: "num", text: ci(r.k1_skill)}), el("td", {class: "num", text: ci(r.family_skill)})]);
      }))]),
      fplot,
    ]));
    R.newPlot(fplot, [{type: "scatter", mode: "markers+text", x: frontier.map(function (r) { return r.ce_loss_recovered; }),
      y: frontier.map(function (r) { return r.family_skill ? r.family_skill.value : null; }),
      text: frontier.map(function (r) { return R.plotText(r.d_sae + (r.k === null ? "" : " · k" + r.k)); }), textposition: "top center",
      error_y: {type: "data", symmetric: false, array: frontier.map(function (r) { return r.family_skill && r.family_skill.high !== null ? r.family_skill.high - r.family_skill.value : 0; }),
        arrayminus: frontier.map(function (r) { return r.family_skill && r.family_skill.low !== null ? r.family_skill.value - r.family_skill.low : 0; })},
      marker: {color: sideColor.features, size: 9}}],
      R.plotLayout({showlegend: false, margin: {l: 48, r: 12, t: 20, b: 40}, xaxis: {title: {text: "CE loss recovered"}},
        yaxis: {title: {text: "median skill, best family"}}}), R.plotConfig);
  }

  // --- specificity histograms ----------------------------------------------------------------------------
  var scored = card.concepts.filter(function (c) { return c.scored; });
  if (scored.length) {
    var picker = el("select", {id: "concept-pick"}, scored.map(function (c) { return el("option", {value: c.name, text: c.name}); }));
    var plots = el("div", {class: "pair"}), note = el("p", {class: "sub"});
    main.appendChild(el("section", {class: "panel"}, [
      el("h2", {}, ["Specificity ", el("span", {class: "sub", text: "— the first fold's best unit, on that fold's documents, stacked by whether the token is in the concept"})]),
      picker, note, plots]));
    var draw = function () {
      var c = scored.filter(function (x) { return x.name === picker.value; })[0];
      plots.textContent = "";
      var parts = [];
      [["feature", c.feature_histogram], ["neuron", c.neuron_histogram]].forEach(function (spec) {
        var h = spec[1];
        if (!h) return;
        var div = el("div", {class: "plot", style: "height: 260px"});
        plots.appendChild(div);
        var centres = h.edges.slice(0, -1).map(function (e, k) { return (e + h.edges[k + 1]) / 2; });
        R.newPlot(div, [
          {type: "bar", name: "in concept", x: centres, y: h.positive, marker: {color: "#e8702a"}},
          {type: "bar", name: "not in concept", x: centres, y: h.negative, marker: {color: "#9aa3b5"}},
        ], R.plotLayout({barmode: "stack", showlegend: true, legend: {orientation: "h", x: 0, y: 1.15},
          title: {text: R.plotText(spec[0] + " " + h.unit + " on " + c.name), font: {size: 12}},
          margin: {l: 48, r: 12, t: 40, b: 40}, xaxis: {title: {text: "activation"}}, yaxis: {type: "log", title: {text: "tokens"}}}), R.plotConfig);
        parts.push(spec[0] + " " + h.unit + ": exactly 0 on " + R.int(h.zero_positive) + " in-concept and " +
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
    text: "— each unit's largest correlation with any unit of a second model trained with another seed (features: an SAE on each model), on " + R.int(u.tokens || 0) + " tokens"})])]);
  var traces = [];
  [["features", "#e8702a"], ["neurons", "#1c64d8"]].forEach(function (spec) {
    var part = u[spec[0]];
    if (!part) {
      uni.appendChild(el("p", {class: "sub", text: spec[0] + ": " + (u.missing || "no SAE on the second model (--second-sae)")}));
      return;
    }
    uni.appendChild(el("p", {text: spec[0] + ": median " + f2(part.median) + " over " + R.int(part.alive) + " units that vary"}));
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
        return el("tr", {}, [el("td", {text: sideName[s]}), el("td", {class: "num", text: f2(lc[s].median)}), el("td", {class: "num", text: f2(lc[s].mean)})]);
      }))]),
  ]));

  // --- feature splitting ---------------------------------------------------------------------------------
  var sp = card.splitting;
  if (sp) {
    var section = el("section", {class: "panel", id: "splitting"}, [el("h2", {}, ["Feature splitting ", el("span", {class: "sub",
      text: "— SAEs of " + sp.widths.join(", ") + " features on the same activations; each feature's parent is the narrower SAE's feature of largest decoder cosine"})])]);
    section.appendChild(el("table", {class: "grid"}, [el("thead", {}, [el("tr", {}, ["from", "to", "median cosine", "median co-activation", "with a parent (cosine ≥ " + sp.parent_cosine + ")"]
      .map(function (h) { return el("th", {text: h}); }))]), el("tbody", {}, sp.pairs.map(function (p) {
      return el("tr", {}, [el("td", {text: String(p.from)}), el("td", {text: String(p.to)}), el("td", {class: "num", text: f2(p.median_cosine)}),
        el("td", {class: "num", text: f2(p.median_coactivation)}), el("td", {class: "num", text: R.pct(p.share_with_parent)})]);
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
      return el("div", {}, [node(level, c.id, " · cosine " + f2(c.cosine) + " · co-activation " + f2(c.coactivation)), branch(level + 1, c.children || [])]);
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
