// The model page: how the model learned (loss curves, text sampled from a fixed prompt along the way)
// and its MLP neurons on that prompt at initialisation beside the trained model's.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  R.meta = R.readJSON("report-meta");
  var meta = R.meta, training = R.readJSON("report-training");
  var app = document.getElementById("app");
  app.appendChild(R.topbar("model"));
  var main = el("main");
  app.appendChild(main);
  main.appendChild(el("h1", {text: "Model · " + (meta.model || "")}));

  if (!training) {
    main.appendChild(el("div", {class: "panel"}, [el("p", {text: "This model has no training record (it was not trained by " +
      "`interp model train`), so there are no loss curves, samples or neuron heatmaps to show."})]));
    return;
  }
  var s = training.summary || {}, model = (training.config || {}).model || {};
  var compressors = s.compressors_bits_per_byte || {};
  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(s.tokens || 0), "training tokens"),
    R.stat(R.int(s.steps || 0), "steps"),
    R.stat(R.fmt(s.final_train_loss), "final train loss"),
    R.stat(R.fmt(s.heldout_loss), "held-out loss (nats/token)"),
    R.stat(R.fmt(s.heldout_bits_per_byte), "held-out bits per byte", "on " + R.int(s.heldout_bytes || 0) + " held-out bytes"),
  ].concat(Object.keys(compressors).map(function (name) {
    return R.stat(R.fmt(compressors[name]), name + " bits per byte", "the same held-out bytes, compressed by " + name);
  })).concat([
    R.stat(s.train_seconds ? R.fmt(s.train_seconds / 60) + " min" : "–", "training time",
      s.tokens_per_second ? R.int(Math.round(s.tokens_per_second)) + " tokens/s, autocast " + (s.autocast || "none") : undefined),
    R.stat(model.n_layers !== undefined ? model.n_layers + " × " + model.d_model + "d, " + model.d_mlp + " neurons" : "–", "shape",
      JSON.stringify(model)),
  ])));

  var curves = el("div", {class: "plot", id: "loss-plot", style: "height: 300px"});
  main.appendChild(el("section", {class: "panel"}, [el("h2", {}, ["Loss ", el("span", {class: "sub", text: "— cross-entropy (nats/token) against training tokens"})]), curves]));
  R.newPlot(curves, [
    {type: "scatter", mode: "lines", name: "train", x: training.train.tokens, y: training.train.loss, line: {color: "#f08c4f", width: 1.5}},
    {type: "scatter", mode: "lines+markers", name: "held-out", x: training.heldout.tokens, y: training.heldout.loss, line: {color: "#1c64d8", width: 2}},
  ], R.plotLayout({showlegend: true, legend: {orientation: "h", x: 0, y: 1.12}, margin: {l: 48, r: 12, t: 30, b: 40}, xaxis: {title: {text: "tokens"}, zeroline: false}, yaxis: {title: {text: "loss"}}}), R.plotConfig);

  if (training.heldout.bits_per_byte) {
    var bpb = el("div", {class: "plot", id: "bpb-plot", style: "height: 280px"});
    main.appendChild(el("section", {class: "panel"}, [el("h2", {}, ["Compression ", el("span", {class: "sub",
      text: "— held-out bits per byte: the model as a compressor of text it never saw, beside general-purpose compressors on the same bytes"})]), bpb]));
    var last = training.heldout.tokens[training.heldout.tokens.length - 1] || 1;
    var traces = [{type: "scatter", mode: "lines+markers", name: "model", x: training.heldout.tokens, y: training.heldout.bits_per_byte,
      line: {color: "#1c64d8", width: 2}}];
    var dashes = ["dash", "dot"], colours = ["#8a8f9c", "#3d9a50"];
    Object.keys(compressors).forEach(function (name, k) {
      traces.push({type: "scatter", mode: "lines", name: R.plotText(name), x: [0, last], y: [compressors[name], compressors[name]],
        line: {color: colours[k % 2], dash: dashes[k % 2], width: 1.5}, hoverinfo: "skip"});
    });
    R.newPlot(bpb, traces, R.plotLayout({showlegend: true, legend: {orientation: "h", x: 0, y: 1.14},
      margin: {l: 48, r: 12, t: 30, b: 40}, xaxis: {title: {text: "tokens"}, zeroline: false},
      yaxis: {title: {text: "bits per byte"}, range: [0, Math.min(8, Math.max.apply(null, training.heldout.bits_per_byte.slice(1).concat([3])))]}}), R.plotConfig);
  }

  var table = el("table", {class: "list samples"});
  table.appendChild(el("tr", {}, [el("td", {class: "muted", text: "step"}), el("td", {class: "muted", text: "tokens"}),
    el("td", {class: "muted", text: "greedy"}), el("td", {class: "muted", text: "sampled (temperature " + training.temperature + ")"})]));
  training.samples.forEach(function (sample) {
    table.appendChild(el("tr", {}, [
      el("td", {class: "num", text: String(sample.step)}),
      el("td", {class: "num", text: R.int(sample.tokens)}),
      el("td", {}, [el("span", {class: "text"}, R.visibleText(sample.greedy))]),
      el("td", {}, [el("span", {class: "text"}, R.visibleText(sample.sampled))]),
    ]));
  });
  main.appendChild(el("section", {class: "panel"}, [el("h2", {}, ["Samples from the fixed prompt ",
    el("span", {class: "sub", text: "— what the model wrote after this prompt at each point of training; · is a space, ↵ a newline"})]),
    el("div", {class: "samples"}, [el("span", {class: "text prompt"}, R.visibleText(training.prompt))]), table]));

  if (training.heatmap) {
    var labels = training.prompt_tokens.map(function (t, k) { return R.plotText(k + " " + R.showToken(t)); });
    var hm = training.heatmap;
    hm.final.forEach(function (layerFinal, layer) {
      var order = hm.order[layer];
      var ordered = function (rows) { return rows.map(function (row) { return order.map(function (j) { return row[j]; }); }); };
      var scale = gelu_scale(hm.zmin[layer], hm.zmax[layer]);
      var init = el("div", {class: "plot", id: "heatmap-init-" + layer, style: "height: " + (120 + 22 * labels.length) + "px"});
      var fin = el("div", {class: "plot", id: "heatmap-final-" + layer, style: "height: " + (120 + 22 * labels.length) + "px"});
      main.appendChild(el("section", {class: "panel"}, [
        el("h2", {}, ["Neuron activations on the prompt, layer " + layer + " ",
          el("span", {class: "sub", text: "— tokens × MLP neurons (blocks." + layer + ".mlp.hook_post); neurons in the same order in " +
            "both panels, sorted by the token at which the trained neuron peaks; white is 0, red positive, blue the " +
            "small negative outputs of GELU; colours end at the 99th percentile (" + R.fmt(hm.zmax[layer]) + ")"})]),
        el("div", {class: "grid2b"}, [el("div", {}, [el("div", {class: "muted", text: "at initialisation"}), init]),
          el("div", {}, [el("div", {class: "muted", text: "trained"}), fin])]),
      ]));
      [[init, hm.init[layer]], [fin, layerFinal]].forEach(function (pair) {
        R.newPlot(pair[0], [{type: "heatmap", z: ordered(pair[1]), y: labels, customdata: ordered(pair[1].map(function () { return order; })),
          colorscale: scale, zmin: hm.zmin[layer], zmax: hm.zmax[layer],
          hovertemplate: "token %{y}<br>neuron %{customdata}<br>activation %{z:.3g}<extra></extra>"}],
          R.plotLayout({margin: {l: 120, r: 12, t: 8, b: 36}, xaxis: {title: {text: "neurons (sorted)"}, showticklabels: false},
            yaxis: {type: "category", autorange: "reversed"}}), R.plotConfig);
      });
    });
  }

  // A colour scale for activations in [zmin, zmax] with zmin <= 0 < zmax: blue below 0, white at 0,
  // yellow to dark red above, so the long positive tail and the short negative dip of GELU both read.
  function gelu_scale(zmin, zmax) {
    var zero = zmin < 0 ? -zmin / (zmax - zmin) : 0;
    var scale = zero > 0 ? [[0, "#3b6fb6"], [zero, "#ffffff"]] : [[0, "#ffffff"]];
    var stops = [[0.25, "#fee391"], [0.6, "#f0703a"], [1, "#8c0d25"]];
    stops.forEach(function (s) { scale.push([zero + (1 - zero) * s[0], s[1]]); });
    return scale;
  }
})();
