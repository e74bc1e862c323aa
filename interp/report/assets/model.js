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
  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(s.tokens || 0), "training tokens"),
    R.stat(R.int(s.steps || 0), "steps"),
    R.stat(R.fmt(s.final_train_loss), "final train loss"),
    R.stat(R.fmt(s.heldout_loss), "held-out loss"),
    R.stat(s.train_seconds ? R.fmt(s.train_seconds / 60) + " min" : "–", "training time"),
    R.stat(model.n_layers !== undefined ? model.n_layers + " × " + model.d_model + "d, " + model.d_mlp + " neurons" : "–", "shape",
      JSON.stringify(model)),
  ]));

  var curves = el("div", {class: "plot", id: "loss-plot", style: "height: 300px"});
  main.appendChild(el("section", {class: "panel"}, [el("h2", {}, ["Loss ", el("span", {class: "sub", text: "— cross-entropy (nats/token) against training tokens"})]), curves]));
  Plotly.newPlot(curves, [
    {type: "scatter", mode: "lines", name: "train", x: training.train.tokens, y: training.train.loss, line: {color: "#f08c4f", width: 1.5}},
    {type: "scatter", mode: "lines+markers", name: "held-out", x: training.heldout.tokens, y: training.heldout.loss, line: {color: "#1c64d8", width: 2}},
  ], R.plotLayout({showlegend: true, legend: {orientation: "h", x: 0, y: 1.12}, margin: {l: 48, r: 12, t: 30, b: 40}, xaxis: {title: {text: "tokens"}, zeroline: false}, yaxis: {title: {text: "loss"}}}), R.plotConfig);

  var table = el("table", {class: "list samples"});
  table.appendChild(el("tr", {}, [el("td", {class: "muted", text: "step"}), el("td", {class: "muted", text: "tokens"}),
    el("td", {class: "muted", text: "greedy"}), el("td", {class: "muted", text: "sampled (temperature " + training.temperature + ")"})]));
  training.samples.forEach(function (sample) {
    table.appendChild(el("tr", {}, [
      el("td", {class: "num", text: String(sample.step)}),
      el("td", {class: "num", text: R.int(sample.tokens)}),
      el("td", {}, [el("span", {class: "text"}, [el("b", {text: training.prompt}), sample.greedy])]),
      el("td", {}, [el("span", {class: "text"}, [el("b", {text: training.prompt}), sample.sampled])]),
    ]));
  });
  main.appendChild(el("section", {class: "panel"}, [el("h2", {}, ["Samples from the fixed prompt ",
    el("span", {class: "sub", text: "— the prompt in bold, then what the model wrote at each point of training"})]), table]));

  if (training.heatmap) {
    var labels = training.prompt_tokens.map(function (t, k) { return k + " " + R.showToken(t); });
    training.heatmap.final.forEach(function (layerFinal, layer) {
      var layerInit = training.heatmap.init[layer];
      var all = [].concat.apply([], layerFinal.concat(layerInit)).map(Math.abs);
      var zmax = Math.max.apply(null, all) || 1;
      var init = el("div", {class: "plot", id: "heatmap-init-" + layer, style: "height: " + (120 + 22 * labels.length) + "px"});
      var fin = el("div", {class: "plot", id: "heatmap-final-" + layer, style: "height: " + (120 + 22 * labels.length) + "px"});
      main.appendChild(el("section", {class: "panel"}, [
        el("h2", {}, ["Neuron activations on the prompt, layer " + layer + " ",
          el("span", {class: "sub", text: "— tokens × MLP neurons (blocks." + layer + ".mlp.hook_post), same colour scale"})]),
        el("div", {class: "grid2b"}, [el("div", {}, [el("div", {class: "muted", text: "at initialisation"}), init]),
          el("div", {}, [el("div", {class: "muted", text: "trained"}), fin])]),
      ]));
      [[init, layerInit], [fin, layerFinal]].forEach(function (pair) {
        Plotly.newPlot(pair[0], [{type: "heatmap", z: pair[1], y: labels, colorscale: "RdBu", zmin: -zmax, zmax: zmax,
          hovertemplate: "token %{y}<br>neuron %{x}<br>activation %{z:.3g}<extra></extra>"}],
          R.plotLayout({margin: {l: 120, r: 12, t: 8, b: 36}, xaxis: {title: {text: "neuron"}}, yaxis: {type: "category", autorange: "reversed"}}), R.plotConfig);
      });
    });
  }
})();
