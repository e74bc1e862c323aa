// One page for every feature: feature.html#ID. The feature's data arrives in data/features-NNNN.js
// (loaded with a <script> element, which works from file://), chunkSize features per file.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  var meta = R.meta, vocab = R.vocab, rows = R.rows, scale = meta.act_scale;
  var chunks = {}, waiting = {};
  R.chunkSize = R.readJSON("report-chunk");
  R.setSpecial(meta.special_ids);

  R.addChunk = function (index, features) {
    chunks[index] = features;
    (waiting[index] || []).forEach(function (callback) { callback(); });
    delete waiting[index];
  };

  function withFeature(id, callback) {
    var index = Math.floor(id / R.chunkSize);
    var done = function () { callback(chunks[index][id - index * R.chunkSize]); };
    if (chunks[index]) return done();
    if (waiting[index]) return waiting[index].push(done);
    waiting[index] = [done];
    var script = document.createElement("script");
    script.src = "data/features-" + String(index).padStart(4, "0") + ".js";
    script.onerror = function () { showError("The data file " + script.src + " is missing; re-run `interp report`."); };
    document.head.appendChild(script);
  }

  var app = document.getElementById("app");
  app.appendChild(R.topbar("feature"));
  var main = el("main");
  app.appendChild(main);

  function showError(text) {
    main.textContent = "";
    main.appendChild(el("div", {class: "panel"}, [el("p", {text: text})]));
  }


  // A link to another feature with what it is about: its label, else its top tokens.
  function featureLink(id) {
    return [el("a", {href: "#" + id, text: "#" + id}), R.about(id)];
  }

  function listTable(items, cells) {
    if (!items.length) return el("div", {class: "empty", text: "none"});
    var table = el("table", {class: "list"});
    items.forEach(function (item) {
      var tr = el("tr");
      cells(item).forEach(function (cell) {
        var td = el("td", cell.num ? {class: "num"} : {});
        (Array.isArray(cell.content) ? cell.content : [cell.content]).forEach(function (c) {
          td.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
        });
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    return table;
  }

  function panel(title, sub, children) {
    var h = el("h2", {}, [title]);
    if (sub) h.appendChild(el("span", {class: "sub", text: " — " + sub}));
    return el("section", {class: "panel"}, [h].concat(children));
  }

  // Bars on a log10 axis (drawn linear in log10 so that bins touch), ticks at 1, 2, 5 x 10^k.
  function histogramPlot(div, f) {
    var low = meta.hist.low, bpo = meta.hist.bpo, n = (meta.hist.high - low) * bpo;
    var x = [], y = [], text = [];
    f.hist.counts.forEach(function (count, k) {
      var b = f.hist.first + k;
      var lo = b === 0 ? 0 : Math.pow(2, low + (b - 1) / bpo);
      var hi = b === n + 1 ? Infinity : Math.pow(2, low + b / bpo);
      x.push(Math.log10(2) * (b === 0 ? low - 0.5 / bpo : low + (b - 0.5) / bpo));
      y.push(count);
      text.push(R.fmt(lo) + " – " + R.fmt(hi));
    });
    var tickvals = [], ticktext = [];
    for (var e = Math.floor(x[0]) - 1; e <= Math.ceil(x[x.length - 1]) + 1; e++) {
      [1, 2, 5].forEach(function (m) {
        var v = Math.log10(m) + e;
        if (v >= x[0] - 0.2 && v <= x[x.length - 1] + 0.2) { tickvals.push(v); ticktext.push(R.fmt(m * Math.pow(10, e))); }
      });
    }
    R.newPlot(div, [{type: "bar", x: x, y: y, text: text, width: Math.log10(2) / bpo * 0.92, marker: {color: "#f08c4f"},
      textposition: "none", hovertemplate: "activation %{text}<br>%{y} firings<extra></extra>"}],
      R.plotLayout({xaxis: {title: {text: "activation (log scale)"}, tickvals: tickvals, ticktext: ticktext, zeroline: false},
        yaxis: {title: {text: "firings"}}}), R.plotConfig);
  }

  function logitPlot(div, logits) {
    var lo = logits.range[0], hi = logits.range[1], n = logits.hist.length, w = (hi - lo) / n;
    var x = logits.hist.map(function (_, k) { return lo + (k + 0.5) * w; });
    var colors = x.map(function (v) { return v >= 0 ? "#5b8def" : "#e06666"; });
    R.newPlot(div, [{type: "bar", x: x, y: logits.hist, marker: {color: colors},
      hovertemplate: "logit effect %{x:.3g}<br>%{y} tokens<extra></extra>"}],
      R.plotLayout({xaxis: {title: {text: "direct logit effect"}}, yaxis: {title: {text: "tokens"}, type: "log"}}), R.plotConfig);
  }

  // The neurons that list this feature among their largest drivers (the same list as on their pages),
  // by the share of each neuron's activation mass it puts in; the first SHOWN, then all on request.
  function drivesPanel(f) {
    var SHOWN = 10, table = el("table", {class: "list", id: "drives-neurons"});
    function rowsUpTo(n) {
      table.textContent = "";
      f.drives.slice(0, n).forEach(function (d) {
        var neuron = meta.neurons ? el("a", {href: "neuron.html#" + d[0], text: "neuron " + d[0]}) : "neuron " + d[0];
        table.appendChild(el("tr", {"data-neuron": d[0]}, [el("td", {}, ["drives ", neuron]),
          el("td", {class: "num"}, [R.pct(d[1]) + " of its activation mass",
            el("span", {class: "bar", style: "width:" + Math.max(2, 70 * d[1]) + "px"})]),
          el("td", {class: "muted", text: "its " + ordinal(d[2]) + " driver"})]));
      });
    }
    rowsUpTo(SHOWN);
    var children = [f.drives.length ? table : el("div", {class: "empty",
      text: "it is not among the " + meta.drivers_listed + " largest drivers of any neuron"})];
    if (f.drives.length > SHOWN) {
      var more = el("button", {class: "btn", id: "drives-all", text: "show all " + f.drives.length});
      more.addEventListener("click", function () { rowsUpTo(f.drives.length); more.remove(); });
      children.push(more);
    }
    return panel("Drives neurons", "the neurons that list it among their " + meta.drivers_listed +
      " largest drivers, by its share of each one's positive activation mass", children);
  }
  function ordinal(n) {
    var suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({1: "st", 2: "nd", 3: "rd"}[n % 10] || "th");
    return n + suffix;
  }

  // What the model loses without the feature: its top examples re-run with it set to 0.
  function ablationPanel(f) {
    var title = "When this feature is removed";
    if (!f.ablation) {
      return panel(title, null, [el("div", {class: "empty", text: meta.ablation ?
        "no top example with a next token inside its window" : "not computed (interp analyze --ablation-examples 0)"})]);
    }
    var a = f.ablation;
    return panel(title, "set to 0 at every position of its top examples", [
      el("p", {id: "ablation-summary"}, ["Log p of the actual next token changes by ", el("b", {text: R.fmt(a.mean) + " nats"}),
        " on average over " + R.int(a.runs) + " top example" + (a.runs === 1 ? "" : "s") + "."]),
      el("div", {class: "muted", text: "tokens whose log p falls most"}),
      listTable(a.drops.slice(0, 10), function (t) { return [{content: R.tokenChip(t[0], "neg")}, {num: true, content: R.fmt(t[1])}]; }),
    ]);
  }

  // Steering (live with `interp serve`): the same prompt continued clean and with this feature clamped.
  function steeringPanel(f) {
    var body = el("div", {id: "steering"});
    R.live.whenLive(function (info) {
      if (!info) return body.appendChild(R.live.howToStart("Steering"));
      var first = f.top[0];
      var context = first ? first[2][0].slice(0, meta.window_left + 1).filter(function (t) { return t >= 0 && !R.special[t]; })
        .map(R.tokenString).join("") : "";
      var prompt = el("textarea", {id: "steer-prompt", rows: "3", spellcheck: "false", maxlength: String(info.limits.text_chars),
        "aria-label": "prompt"});
      prompt.value = context;
      var value = el("input", {id: "steer-value", type: "number", step: "any", "aria-label": "clamp value"});
      value.value = String(R.fmt(Math.max(f.max, 1) * 4));
      var count = el("input", {id: "steer-tokens", type: "number", min: "1", max: String(info.limits.new_tokens), value: "40",
        "aria-label": "tokens"});
      var temperature = el("input", {id: "steer-temperature", type: "number", min: "0", step: "0.1", value: "0",
        "aria-label": "temperature"});
      var button = el("button", {id: "steer-run", class: "btn", text: "Generate"});
      var status = el("div", {id: "steer-status", class: "muted"});
      var clean = el("div", {id: "steer-clean", class: "text steer-text"});
      var steered = el("div", {id: "steer-steered", class: "text steer-text"});
      body.appendChild(prompt);
      body.appendChild(el("div", {class: "prompt-controls"}, [
        el("label", {}, ["clamp to ", value]), el("label", {}, ["tokens ", count]),
        el("label", {}, ["temperature ", temperature]), button, status]));
      body.appendChild(el("div", {class: "grid2b"}, [
        el("div", {}, [el("div", {class: "muted", text: "clean"}), clean]),
        el("div", {}, [el("div", {class: "muted", id: "steer-steered-title", text: "feature " + f.id + " clamped"}), steered])]));
      button.addEventListener("click", function () {
        var request = {prompt: prompt.value, tokens: parseInt(count.value, 10), temperature: parseFloat(temperature.value) || 0, seed: 0};
        var steer = {};
        steer[String(f.id)] = parseFloat(value.value);
        status.textContent = "generating…";
        Promise.all([R.live.generate(Object.assign({steer: {}}, request)), R.live.generate(Object.assign({steer: steer}, request))])
          .then(function (texts) {
            [[clean, texts[0].text], [steered, texts[1].text]].forEach(function (pair) {
              pair[0].textContent = "";
              R.visibleText(pair[1]).forEach(function (node) { pair[0].appendChild(typeof node === "string" ? document.createTextNode(node) : node); });
            });
            document.getElementById("steer-steered-title").textContent = "feature " + f.id + " clamped to " + value.value;
            status.textContent = texts[0].text === texts[1].text ? "no change" : "done";
          }, function (err) { status.textContent = err.message; });
      });
    });
    return panel("Steering", "continue a prompt with this feature clamped at every position", [body]);
  }

  function render(f) {
    main.textContent = "";
    document.title = "Feature " + f.id + " · " + meta.title;
    var head = el("div", {class: "fhead"}, [el("h1", {id: "feature-title", text: "Feature " + f.id})]);
    if (f.label) {
      var scored = f.label.score !== null && f.label.score !== undefined;
      head.appendChild(el("span", {class: "label-chip", text: R.labelText(f.label.text), title: f.label.text}));
      head.appendChild(el("span", {class: "label-score", id: "label-score", text: scored ? "score " + R.fmt(f.label.score, 2) +
        " from " + R.int(f.label.positives || 0) + " held-out firings (95% lower bound " + R.fmt(f.label.lower, 2) + ")" : "unscored label",
        title: "the held-out detection AUROC of the label's rule: 1 separates the feature's firings from its silence, 0.5 is chance"}));
    }
    var goto = el("input", {type: "number", min: "0", max: String(meta.d_sae - 1), placeholder: "go to #", "aria-label": "go to feature"});
    goto.addEventListener("keydown", function (e) { if (e.key === "Enter" && goto.value !== "") window.location.hash = "#" + goto.value; });
    head.appendChild(el("div", {class: "fnav"}, [
      f.id > 0 ? el("a", {class: "btn", href: "#" + (f.id - 1), text: "← #" + (f.id - 1)}) : null,
      f.id < meta.d_sae - 1 ? el("a", {class: "btn", href: "#" + (f.id + 1), text: "#" + (f.id + 1) + " →"}) : null,
      goto, el("a", {class: "btn", href: "index.html", text: "All features"})]));
    main.appendChild(head);

    main.appendChild(el("div", {class: "stats"}, [
      R.stat(R.pct(f.density), "density", R.int(f.fire_count) + " firings in " + R.int(meta.tokens) + " tokens"),
      R.stat(R.int(f.fire_count), "firings"),
      R.stat(R.int(f.sequences), "sequences fired in"),
      R.stat(R.fmt(f.max), "max activation"),
      R.stat(R.fmt(f.mean), "mean when active"),
    ]));
    if (!f.fire_count) {
      main.appendChild(el("div", {class: "panel"}, [el("p", {text: "This feature never fired on the " + R.int(meta.tokens) +
        " tokens analysed (a dead feature). Its decoder direction still has the effects below."})]));
    }

    var left = el("div"), right = el("div");
    main.appendChild(el("div", {class: "grid2"}, [left, right]));

    var top = el("div", {id: "top-examples"});
    f.top.forEach(function (e, k) {
      var removed = f.ablation && f.ablation.examples[k] !== null && f.ablation.examples[k] !== undefined ?
        "; removing the feature changes log p(next token) by " + R.fmt(f.ablation.examples[k]) + " nats" : "";
      var example = R.example(e[0], e[2], vocab, f.max, scale, meta.window_left, "fires on " + R.pct(e[1]) + " of this sequence" + removed +
        (e[3] > 1 ? "; the same text tops " + e[3] + " sequences" : ""));
      if (e[3] > 1) example.firstChild.appendChild(el("span", {class: "repeats", title: "the same window of text in " + e[3] + " sequences, shown once",
        text: "×" + e[3]}));
      top.appendChild(example);
    });
    if (!f.top.length) top.appendChild(el("div", {class: "empty", text: "no firings"}));
    left.appendChild(panel("Top activations", "one example per sequence, the same text shown once (×n: in n sequences); " +
      "shade = activation, hover a token for its value", [top]));

    var intervals = el("div", {id: "intervals"});
    f.intervals.forEach(function (iv) {
      intervals.appendChild(el("div", {class: "interval-head"}, [
        el("span", {}, [el("b", {text: "activation " + R.fmt(iv[0]) + " – " + R.fmt(iv[1])})]),
        el("span", {}, [R.pct(iv[3]) + " of firings (" + R.int(iv[2]) + ")", el("span", {class: "bar", style: "width:" + Math.max(2, 80 * iv[3]) + "px"})]),
      ]));
      iv[4].forEach(function (e) { intervals.appendChild(R.example(e[0], e[1], vocab, f.max, scale, meta.window_left)); });
      if (iv[5]) intervals.appendChild(el("div", {class: "muted repeated", text: iv[5] + " more sample" + (iv[5] > 1 ? "s" : "") +
        " from this octave repeat" + (iv[5] > 1 ? "" : "s") + " the text of an example above"}));
    });
    if (!f.intervals.length) intervals.appendChild(el("div", {class: "empty", text: "no firings"}));
    left.appendChild(steeringPanel(f));
    left.appendChild(panel("Samples by activation", "random firings from each octave below the max, with its share of all firings", [intervals]));

    var hist = el("div", {class: "plot", id: "activation-histogram"});
    right.appendChild(panel("Activation histogram", "log-spaced bins", [hist]));

    var counts = R.tokenCounts || [];
    right.appendChild(panel("Fires on tokens", "share of the activation mass; how often it fires on each occurrence", [
      listTable(f.mass.slice(0, 12), function (m) {
        var occurrences = counts[m[0]];
        return [{content: R.tokenChip(m[0])}, {num: true, content: R.pct(f.mass_total ? m[1] / f.mass_total : 0) + " of mass"},
          {num: true, content: R.int(m[2]) + (occurrences ? " / " + R.int(occurrences) : "") + " occurrences"}];
      })]));

    if (f.logits) {
      var lists = el("div", {class: "grid2b"}, [
        el("div", {}, [el("div", {class: "muted", text: "promotes"}),
          listTable(f.logits.top.slice(0, 10), function (t) { return [{content: R.tokenChip(t[0], "pos")}, {num: true, content: "+" + R.fmt(t[1])}]; })]),
        el("div", {}, [el("div", {class: "muted", text: "suppresses"}),
          listTable(f.logits.bottom.slice(0, 10), function (t) { return [{content: R.tokenChip(t[0], "neg")}, {num: true, content: R.fmt(t[1])}]; })]),
      ]);
      var lplot = el("div", {class: "plot", id: "logit-histogram", style: "height: 180px"});
      var listed = f.logits.top.slice(0, 10).concat(f.logits.bottom.slice(0, 10)).map(function (t) { return t[0]; });
      right.appendChild(panel("Logit effects", meta.logit_basis, [lists, R.fragmentNote(listed), lplot]));
      setTimeout(function () { logitPlot(lplot, f.logits); }, 0);
    } else {
      right.appendChild(panel("Logit effects", null, [el("div", {class: "empty", text: meta.logit_missing || "not computed"})]));
    }

    right.appendChild(ablationPanel(f));

    if (f.nearest) {
      right.appendChild(panel("Nearest features", "cosine of decoder directions", [
        listTable(f.nearest.slice(0, 8), function (n) { return [{content: featureLink(n[0])}, {num: true, content: R.fmt(n[1])}]; })]));
    }
    right.appendChild(panel("Co-firing features", "fire on the same tokens; Jaccard index (tokens)" +
      (meta.cofire_exact ? "" : " — approximate"), [
      listTable(f.cofire.slice(0, 8), function (c) {
        return [{content: featureLink(c[0])}, {num: true, content: R.fmt(c[1]) + " (" + R.int(c[2]) + ")"}];
      })]));
    if (f.drives) right.appendChild(drivesPanel(f));
    if (f.fire_count) setTimeout(function () { histogramPlot(hist, f); }, 0);
    else hist.appendChild(el("div", {class: "empty", text: "no firings"}));
    window.scrollTo(0, 0);
  }

  function route() {
    var id = parseInt(window.location.hash.slice(1), 10);
    if (!(id >= 0 && id < meta.d_sae)) {
      if (window.location.hash.length > 1) return showError("There is no feature " + window.location.hash.slice(1) + "; features are 0–" + (meta.d_sae - 1) + ".");
      id = 0;
    }
    withFeature(id, render);
  }
  window.addEventListener("hashchange", route);
  route();
})();
