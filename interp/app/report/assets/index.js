// The feature index: every feature in one table that sorts and filters in the browser. Only the
// rows in view are in the DOM (fixed row height, absolute positions), so 16k features stay fast.
"use strict";

(function () {
  var R = window.monoReport, el = R.el;
  R.meta = R.readJSON("report-meta");
  var meta = R.meta;
  var rows = R.readJSON("report-rows").map(function (r) {
    var row = {id: r[0], density: r[1], max: r[2], mean: r[3], fired: r[4], tokens: r[5], promoted: r[6], label: r[7], score: r[8],
      positives: r[9], lower: r[10]};
    // what the filter matches: the text as the page shows it (chip forms: · for a space, ↵ for a newline)
    row.tokenText = row.tokens.map(R.tokenString);
    row.promotedText = row.promoted.map(R.tokenString);
    row.search = ["#" + row.id, R.labelText(row.label)].concat(row.tokenText.map(R.chipText), row.promotedText.map(R.chipText))
      .join("\u241f").toLowerCase();
    return row;
  });
  var ROW_HEIGHT = 34;
  var columns = [
    {key: "id", name: "Feature", num: true},
    {key: "label", name: "Label"},
    {key: "lower", name: "Score", num: true},  // sorted by its 95% lower bound: a score from 3 firings ranks low
    {key: "density", name: "Density", num: true},
    {key: "max", name: "Max act.", num: true},
    {key: "mean", name: "Mean act.", num: true},
    {key: "tokens", name: "Top tokens"},
    {key: "promoted", name: "Promotes"},
  ];
  var FEW = 10;  // "hide features with fewer than FEW firings" (on by default)
  var state = {sort: "lower", dir: -1, filter: "", hideDead: false, hideFew: true, view: rows.slice()};
  var maxLogDensity = Math.log10(Math.max.apply(null, rows.map(function (r) { return r.density || 1e-12; })));

  var app = document.getElementById("app");
  app.appendChild(R.topbar("index"));
  var main = el("main");
  app.appendChild(main);

  var alive = rows.length - meta.dead;
  main.appendChild(el("h1", {text: meta.title}));
  main.appendChild(el("div", {class: "stats"}, [
    R.stat(R.int(rows.length), "features"),
    R.stat(R.int(alive), "fired at least once"),
    R.stat(R.int(meta.dead), "never fired (dead)"),
    R.stat(R.fmt(meta.l0), "mean active per token (L0)"),
    R.stat(R.int(meta.tokens), "tokens analysed", meta.corpus ? "corpus " + meta.corpus + " (" + meta.split + ")" : ""),
  ]));

  var plotPanel = el("div", {class: "panel"}, [
    el("h2", {}, ["Feature density ", el("span", {class: "sub", text: "— log10 of the fraction of tokens each feature fires on (dead features left out)"})]),
    el("div", {id: "density-plot", class: "plot"}),
  ]);
  main.appendChild(plotPanel);

  var filterBox = el("input", {type: "search", id: "filter", placeholder: "Filter: text as shown (·def, ↵), \" def\", density<0.01, fired>=20; Enter on #id opens it",
    "aria-label": "filter features"});
  var deadBox = el("input", {type: "checkbox", id: "hide-dead"});
  var fewBox = el("input", {type: "checkbox", id: "hide-few"});
  var count = el("span", {class: "count", id: "row-count"});
  main.appendChild(el("div", {class: "toolbar"}, [filterBox, el("label", {}, [deadBox, " hide dead features"]),
    el("label", {title: "their statistics and label scores rest on too little evidence"}, [fewBox, " hide features with fewer than " + FEW + " firings"]),
    count]));

  var header = el("div", {class: "frow fhdr", role: "row"});
  columns.forEach(function (c) {
    var cell = el("div", {class: c.num ? "num" : "", "data-key": c.key, role: "columnheader", text: c.name,
      title: "sort by " + c.name.toLowerCase()});
    cell.addEventListener("click", function () { sortBy(c.key); });
    header.appendChild(cell);
  });
  var body = el("div", {class: "fbody", id: "feature-rows", role: "rowgroup"});
  var spacer = el("div", {style: "height: 0px"});
  body.appendChild(spacer);
  var hasLabels = rows.some(function (r) { return r.label; });
  main.appendChild(el("div", {class: "ftable" + (hasLabels ? "" : " nolabels"), role: "table"}, [header, body]));

  function compare(key, dir) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (key === "tokens" || key === "promoted") { x = a[key + "Text"].join(" "); y = b[key + "Text"].join(" "); }
      if (key === "label" || key === "tokens" || key === "promoted") {
        if (!x && y) return 1;
        if (x && !y) return -1;
        return dir * String(x).localeCompare(String(y)) || a.id - b.id;
      }
      var xMissing = x === null || x === undefined, yMissing = y === null || y === undefined;
      if (xMissing !== yMissing) return xMissing ? 1 : -1;  // unscored rows last, in either direction
      if (xMissing) return a.id - b.id;
      return dir * (x - y) || a.id - b.id;
    };
  }

  function sortBy(key) {
    if (state.sort === key) state.dir = -state.dir;
    else { state.sort = key; state.dir = key === "id" || key === "label" || key === "tokens" || key === "promoted" ? 1 : -1; }
    update();
  }

  // Filter terms: words (quotes keep spaces: " def"), each matched in its chip form, and field
  // conditions such as density<0.01, fired>=20, score>0.8 (density also as a percentage, 1%).
  var FIELD = /^(density|fired|score|max|mean)(<=|>=|<|>|=)(-?[0-9.]+(?:e-?[0-9]+)?)(%?)$/;
  function parseFilter(text) {
    var terms = [], conditions = [], match, words = /"([^"]*)"|(\S+)/g;
    while ((match = words.exec(text))) {
      var word = match[1] !== undefined ? match[1] : match[2], field = FIELD.exec(word.toLowerCase());
      if (field) conditions.push({key: field[1], op: field[2], value: Number(field[3]) / (field[4] ? 100 : 1)});
      else if (word) terms.push(R.chipText(word).toLowerCase());
    }
    return {terms: terms, conditions: conditions};
  }
  var OPS = {"<": function (a, b) { return a < b; }, ">": function (a, b) { return a > b; }, "<=": function (a, b) { return a <= b; },
    ">=": function (a, b) { return a >= b; }, "=": function (a, b) { return a === b; }};

  function update() {
    var parsed = parseFilter(state.filter);
    state.view = rows.filter(function (r) {
      if (state.hideDead && !r.fired) return false;
      if (state.hideFew && r.fired < FEW) return false;
      for (var t = 0; t < parsed.terms.length; t++) if (r.search.indexOf(parsed.terms[t]) < 0) return false;
      for (var c = 0; c < parsed.conditions.length; c++) {
        var cond = parsed.conditions[c], value = r[cond.key];
        if (value === null || value === undefined || !OPS[cond.op](value, cond.value)) return false;
      }
      return true;
    });
    state.view.sort(compare(state.sort, state.dir));
    Array.prototype.forEach.call(header.children, function (cell) {
      cell.setAttribute("aria-sort", cell.dataset.key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    });
    count.textContent = "showing " + R.int(state.view.length) + " of " + R.int(rows.length);
    spacer.style.height = state.view.length * ROW_HEIGHT + "px";
    body.scrollTop = 0;
    saveState();
    render(true);
  }

  // The sort, the filter and the dead-feature toggle live in the URL (#sort=…&dir=…&q=…&dead=1).
  function saveState() {
    var parts = ["sort=" + state.sort, "dir=" + state.dir];
    if (state.filter) parts.push("q=" + encodeURIComponent(state.filter));
    if (state.hideDead) parts.push("dead=1");
    if (!state.hideFew) parts.push("few=0");
    if (history.replaceState) history.replaceState(null, "", "#" + parts.join("&"));
  }
  function loadState() {
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("="), value = decodeURIComponent(kv.slice(1).join("="));
      if (kv[0] === "sort" && columns.some(function (c) { return c.key === value; })) state.sort = value;
      else if (kv[0] === "dir") state.dir = value === "1" ? 1 : -1;
      else if (kv[0] === "q") state.filter = value;
      else if (kv[0] === "dead") state.hideDead = value === "1";
      else if (kv[0] === "few") state.hideFew = value !== "0";
    });
    filterBox.value = state.filter;
    deadBox.checked = state.hideDead;
    fewBox.checked = state.hideFew;
  }

  var rendered = {first: -1, last: -1};
  function render(force) {
    var first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - 10);
    var last = Math.min(state.view.length, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + 10);
    if (!force && first === rendered.first && last === rendered.last) return;
    rendered = {first: first, last: last};
    while (body.lastChild !== spacer) body.removeChild(body.lastChild);
    var fragment = document.createDocumentFragment();
    for (var i = first; i < last; i++) fragment.appendChild(rowElement(state.view[i], i));
    body.appendChild(fragment);
  }

  function tokenCell(list, cls) {
    var cell = el("div");
    if (!list.length) cell.appendChild(el("span", {class: "muted", text: "–"}));
    list.forEach(function (t) { cell.appendChild(R.tokenChip(t, cls)); });
    return cell;
  }

  function rowElement(r, index) {
    var densityWidth = r.density ? Math.max(2, 44 * (1 + (Math.log10(r.density) - maxLogDensity) / 6)) : 0;
    var row = el("div", {class: "frow" + (r.fired ? "" : " dead"), role: "row", "data-id": r.id,
      style: "top:" + index * ROW_HEIGHT + "px"}, [
      el("div", {class: "num"}, [el("a", {href: "feature.html#" + r.id, text: String(r.id)})]),
      el("div", {text: R.labelText(r.label), title: r.label ? r.label + (r.score !== null ? "  (score " + R.fmt(r.score) + ")" : "") : ""}),
      el("div", {class: "num", text: r.label && r.score !== null ? R.fmt(r.score, 2) + " · " + R.int(r.positives || 0) : "",
        title: r.score !== null ? "label score " + R.fmt(r.score) + ": held-out detection AUROC of the label's rule, from " +
          R.int(r.positives || 0) + " held-out firings; 95% lower bound " + R.fmt(r.lower) + " (the sort key)" : "no score"}),
      el("div", {class: "num dcell", title: R.int(r.fired) + " firings"}, [
        el("span", {class: "dtrack"}, [el("span", {class: "dbar", style: "width:" + Math.max(0, densityWidth) + "px"})]),
        el("span", {text: R.pct(r.density)})]),
      el("div", {class: "num", text: R.fmt(r.max)}),
      el("div", {class: "num", text: R.fmt(r.mean)}),
      tokenCell(r.tokens),
      tokenCell(r.promoted, "pos"),
    ]);
    row.addEventListener("click", function (event) {
      if (event.target.tagName !== "A") window.location.href = "feature.html#" + r.id;
    });
    return row;
  }

  var filterTimer = null;
  filterBox.addEventListener("input", function () {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(function () { state.filter = filterBox.value; update(); }, 60);
  });
  deadBox.addEventListener("change", function () { state.hideDead = deadBox.checked; update(); });
  fewBox.addEventListener("change", function () { state.hideFew = fewBox.checked; update(); });
  filterBox.addEventListener("keydown", function (event) {  // Enter on an id opens that feature
    var id = /^\s*#?(\d+)\s*$/.exec(filterBox.value);
    if (event.key === "Enter" && id && Number(id[1]) < rows.length) window.location.href = "feature.html#" + Number(id[1]);
  });
  body.addEventListener("scroll", function () { window.requestAnimationFrame(function () { render(false); }); });
  window.addEventListener("resize", function () { render(true); });
  loadState();
  update();

  var logs = rows.filter(function (r) { return r.density > 0; }).map(function (r) { return Math.log10(r.density); });
  R.newPlot("density-plot", [{type: "histogram", x: logs, nbinsx: 60, marker: {color: "#f08c4f"},
    hovertemplate: "log10 density %{x}<br>%{y} features<extra></extra>"}],
    R.plotLayout({xaxis: {title: {text: "log10(density)"}, zeroline: false}, yaxis: {title: {text: "features"}}}), R.plotConfig);
})();
