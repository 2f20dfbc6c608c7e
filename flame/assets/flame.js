// profcap flame graph viewer. One instance per <div class="pcf" data-pcf=ID>,
// its data in <script type="application/json" id="ID-data">. No network, no
// dependencies; names only ever reach the page through textContent and
// canvas fillText, never as markup.
(function () {
  'use strict';
  if (window.profcapFlame) return;
  var ROW = 18, FONT = '12px Verdana, system-ui, sans-serif';
  var LANGS = ['other', 'Go', 'Rust', 'C/C++', 'kernel', 'JIT/JS', 'Python', 'Ruby', 'group/idle'];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function fmt(v, unit) {
    var a = Math.abs(v), m = {nanoseconds: 1, microseconds: 1e3, milliseconds: 1e6, seconds: 1e9}[unit];
    if (m) {
      var ns = v * m; a = Math.abs(ns);
      if (a >= 1e9) return (ns / 1e9).toFixed(2) + ' s';
      if (a >= 1e6) return (ns / 1e6).toFixed(2) + ' ms';
      if (a >= 1e3) return (ns / 1e3).toFixed(2) + ' µs';
      return ns.toFixed(0) + ' ns';
    }
    if (unit === 'bytes') {
      if (a >= 1073741824) return (v / 1073741824).toFixed(2) + ' GiB';
      if (a >= 1048576) return (v / 1048576).toFixed(2) + ' MiB';
      if (a >= 1024) return (v / 1024).toFixed(2) + ' KiB';
      return v + ' B';
    }
    return v.toLocaleString('en-US') + (unit && unit !== 'count' ? ' ' + unit : '');
  }
  function pct(v, t) { return t > 0 ? (100 * v / t).toFixed(2) + '%' : '0%'; }

  function hash(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return h >>> 0;
  }
  function langColor(name, lang) {
    var s = hash(name), v1 = (s & 255) / 255, v2 = ((s >>> 8) & 255) / 255, v3 = ((s >>> 16) & 255) / 255, c;
    switch (lang) {
      case 1: c = [50 + 60 * v1, 170 + 50 * v2, 200 + 40 * v1]; break;
      case 2: c = [200 + 40 * v1, 110 + 50 * v2, 60 + 30 * v1]; break;
      case 4: c = [230 + 25 * v1, 140 + 40 * v2, 30 + 30 * v1]; break;
      case 5: c = [80 + 60 * v1, 190 + 50 * v2, 80 + 40 * v1]; break;
      case 6: c = [130 + 50 * v1, 140 + 40 * v2, 230 + 25 * v1]; break;
      case 7: c = [230 + 25 * v1, 80 + 50 * v2, 110 + 40 * v1]; break;
      case 8: c = [190 + 20 * v1, 190 + 20 * v1, 190 + 20 * v1]; break;
      case 3: c = [205 + 50 * v1, 230 * v2, 55 * v3]; break;
      default: c = [205 + 50 * v1, 100 + 130 * v2, 55 * v3];
    }
    return 'rgb(' + (c[0] | 0) + ',' + (c[1] | 0) + ',' + (c[2] | 0) + ')';
  }
  function diffColor(d, scale) {
    var f = Math.min(1, Math.abs(d) / scale), c = (255 - 200 * f) | 0;
    if (d > 0) return 'rgb(255,' + c + ',' + c + ')';
    if (d < 0) return 'rgb(' + c + ',' + c + ',255)';
    return 'rgb(250,250,250)';
  }

  // Tree: flat preorder arrays. tot[t][i] and base[t][i] per sample type.
  function decode(data) {
    var T = data.types.length, D = !!data.diff, stride = 2 + T * (D ? 2 : 1);
    var raw = data.nodes, N = raw.length / stride;
    var tr = {N: N, T: T, name: new Int32Array(N), parent: new Int32Array(N), end: new Int32Array(N),
      depth: new Int32Array(N), tot: [], base: D ? [] : null, names: data.names, langs: data.langs,
      shorts: data.shorts || []};
    for (var t = 0; t < T; t++) { tr.tot.push(new Float64Array(N)); if (D) tr.base.push(new Float64Array(N)); }
    var st = [], rem = [], maxd = 0;
    for (var i = 0; i < N; i++) {
      var off = i * stride, nc = raw[off + 1];
      tr.name[i] = raw[off];
      for (t = 0; t < T; t++) {
        tr.tot[t][i] = raw[off + 2 + t];
        if (D) tr.base[t][i] = raw[off + 2 + T + t];
      }
      if (st.length) {
        var p = st[st.length - 1];
        tr.parent[i] = p; tr.depth[i] = tr.depth[p] + 1; rem[rem.length - 1]--;
        if (tr.depth[i] > maxd) maxd = tr.depth[i];
      } else { tr.parent[i] = -1; tr.depth[i] = 0; }
      if (nc > 0) { st.push(i); rem.push(nc); } else {
        tr.end[i] = i + 1;
        while (st.length && rem[rem.length - 1] === 0) { tr.end[st.pop()] = i + 1; rem.pop(); }
      }
    }
    while (st.length) { tr.end[st.pop()] = N; }
    tr.maxDepth = maxd;
    return tr;
  }

  // Flattens nested {n: nameIndex, v: [..], b: [..], c: Map} nodes into a tree.
  function flatten(root, T, D, names, langs, shorts) {
    var nodes = [];
    (function walk(x) {
      var kids = Array.from(x.c.values());
      kids.sort(function (a, b) { return names[a.n] < names[b.n] ? -1 : names[a.n] > names[b.n] ? 1 : 0; });
      nodes.push(x.n, kids.length);
      for (var t = 0; t < T; t++) nodes.push(x.v[t]);
      if (D) for (t = 0; t < T; t++) nodes.push(x.b[t]);
      kids.forEach(walk);
    })(root);
    return decode({types: new Array(T), diff: D, nodes: nodes, names: names, langs: langs, shorts: shorts});
  }

  // without returns tr without the subtrees rooted at frames named k (the
  // idle frame), their values taken out of every ancestor.
  function without(tr, k) {
    var T = tr.T, D = !!tr.base, N = tr.N, i, t, a;
    var sub = [], bsub = [];
    for (t = 0; t < T; t++) { sub.push(new Float64Array(N)); if (D) bsub.push(new Float64Array(N)); }
    var drop = new Uint8Array(N), any = false;
    for (i = 1; i < N;) {
      if (tr.name[i] !== k) { i++; continue; }
      any = true; drop[i] = 1;
      for (a = tr.parent[i]; a >= 0; a = tr.parent[a]) {
        for (t = 0; t < T; t++) { sub[t][a] += tr.tot[t][i]; if (D) bsub[t][a] += tr.base[t][i]; }
      }
      i = tr.end[i];
    }
    if (!any) return tr;
    var nodes = [];
    (function emit(i) {
      var kids = [];
      for (var j = i + 1; j < tr.end[i]; j = tr.end[j]) if (!drop[j]) kids.push(j);
      nodes.push(tr.name[i], kids.length);
      for (var t = 0; t < T; t++) nodes.push(tr.tot[t][i] - sub[t][i]);
      if (D) for (t = 0; t < T; t++) nodes.push(tr.base[t][i] - bsub[t][i]);
      kids.forEach(emit);
    })(0);
    return decode({types: new Array(T), diff: D, nodes: nodes, names: tr.names, langs: tr.langs, shorts: tr.shorts});
  }

  function Graph(root, data) {
    if (!data) {
      var id = root.getAttribute('data-pcf');
      var script = document.getElementById(id + '-data');
      data = JSON.parse(script.textContent);
    }
    var g = this;
    g.root = root; g.data = data; g.types = data.types; g.sel = data.sel; g.icicle = !!data.icicle;
    g.minWidth = data.minWidth > 0 ? data.minWidth : 1;
    g.full = decode(data); g.view = 'all'; g.focus = 0; g.selected = -1; g.re = null;
    g.idle = data.idle >= 0 ? data.idle : -1;
    g.showIdle = g.idle < 0 || !!data.showIdle;
    g.base = g.showIdle ? g.full : without(g.full, g.idle);
    g.tree = g.base;
    g.nameColor = [];
    for (var k = 0; k < data.names.length; k++) g.nameColor.push(langColor(data.names[k], data.langs[k]));
    g.build();
    g.relayout();
    var ro = window.ResizeObserver ? new ResizeObserver(function () { g.draw(); }) : null;
    if (ro) ro.observe(root); else window.addEventListener('resize', function () { g.draw(); });
  }

  Graph.prototype.build = function () {
    var g = this, d = g.data, root = g.root;
    var bar = el('div', 'pcf-bar');
    bar.appendChild(el('span', 'pcf-title', d.title));
    if (g.idle >= 0) {
      var idleBtn = el('button', 'pcf-idle');
      idleBtn.title = 'idle: threads and goroutines of the runtime waiting for work (Go scheduler, idle connections, parked workers, event loops in epoll_wait); hidden, shares are of the rest';
      idleBtn.addEventListener('click', function () { g.setIdle(!g.showIdle); });
      bar.appendChild(idleBtn);
      g.idleBtn = idleBtn;
    }
    if (g.types.length > 1) {
      var sel = el('select', 'pcf-type');
      sel.title = 'sample type';
      g.types.forEach(function (t, i) {
        var o = el('option', null, t.type + ' (' + t.unit + ')'); o.value = String(i); sel.appendChild(o);
      });
      sel.value = String(g.sel);
      sel.addEventListener('change', function () { g.sel = +sel.value; g.relayout(); });
      bar.appendChild(sel);
    }
    var search = el('input'); search.type = 'search'; search.className = 'pcf-search';
    search.placeholder = 'search (regular expression)'; search.setAttribute('aria-label', 'search frames by regular expression');
    search.addEventListener('input', function () { g.setSearch(search.value); });
    bar.appendChild(search);
    var reset = el('button', 'pcf-reset', 'Reset zoom');
    reset.addEventListener('click', function () { g.showAll(); });
    bar.appendChild(reset);
    var callers = el('button', 'pcf-callers', 'Callers');
    callers.title = 'everything that calls the selected function (click a frame first)';
    callers.disabled = true;
    callers.addEventListener('click', function () { g.showCallers(); });
    bar.appendChild(callers);
    var callees = el('button', 'pcf-callees', 'Callees');
    callees.title = 'everything the selected function calls, merged over all its call sites (click a frame first)';
    callees.disabled = true;
    callees.addEventListener('click', function () { g.showCallees(); });
    bar.appendChild(callees);
    var ice = el('button', 'pcf-icicle', g.icicle ? 'Flame' : 'Icicle');
    ice.addEventListener('click', function () { g.icicle = !g.icicle; ice.textContent = g.icicle ? 'Flame' : 'Icicle'; g.draw(); });
    bar.appendChild(ice);
    root.appendChild(bar);
    g.crumbs = el('div', 'pcf-crumbs'); root.appendChild(g.crumbs);
    g.status = el('div', 'pcf-status'); root.appendChild(g.status);
    g.viewport = el('div', 'pcf-view'); root.appendChild(g.viewport);
    g.canvas = el('canvas', 'pcf-canvas'); g.viewport.appendChild(g.canvas);
    g.tip = el('div', 'pcf-tip'); root.appendChild(g.tip);
    var leg = el('div', 'pcf-legend');
    if (d.diff) {
      leg.appendChild(document.createTextNode('Colour: change of self share, base → new:'));
      [['rgb(255,55,55)', 'grew'], ['rgb(55,55,255)', 'shrank'], ['rgb(250,250,250)', 'same']].forEach(function (x) {
        var i = el('i'); i.style.background = x[0]; leg.appendChild(i); leg.appendChild(document.createTextNode(x[1]));
      });
    } else {
      var seen = {};
      d.langs.forEach(function (l) { seen[l] = true; });
      leg.appendChild(document.createTextNode('Colour by runtime:'));
      Object.keys(seen).sort().forEach(function (l) {
        var i = el('i'); i.style.background = langColor('legend', +l); leg.appendChild(i);
        leg.appendChild(document.createTextNode(LANGS[+l] || 'other'));
      });
    }
    leg.appendChild(document.createTextNode('  Click: zoom. Esc: reset. Search: regular expression (full names). Names are shortened, cut from the left; the tooltip has the full name.'));
    root.appendChild(leg);
    g.searchBox = search; g.callersBtn = callers; g.calleesBtn = callees;
    g.idleLabel();
    var c = g.canvas;
    c.addEventListener('mousemove', function (e) { g.hover(e); });
    c.addEventListener('mouseleave', function () { g.tip.style.display = 'none'; });
    c.addEventListener('click', function (e) {
      var i = g.hit(e);
      if (i >= 0) { g.selected = i; g.zoom(i); }
    });
    root.tabIndex = 0;
    root.addEventListener('keydown', function (e) { if (e.key === 'Escape') g.showAll(); });
  };

  Graph.prototype.relayout = function () {
    var g = this, tr = g.tree, s = g.sel, tot = tr.tot[s], N = tr.N;
    var x = new Float64Array(N), cur = new Float64Array(N), self = new Float64Array(tot);
    for (var i = 0; i < N; i++) {
      var p = tr.parent[i];
      if (p >= 0) { x[i] = cur[p]; cur[p] += Math.max(0, tot[i]); self[p] -= tot[i]; }
      cur[i] = x[i];
    }
    tr.x = x; tr.self = self;
    if (tr.base) {
      var b = tr.base[s], bself = new Float64Array(b);
      for (i = 0; i < N; i++) if (tr.parent[i] >= 0) bself[tr.parent[i]] -= b[i];
      tr.bself = bself;
      var bt = b[0], ct = tot[0], m = 0.01;
      for (i = 0; i < N; i++) m = Math.max(m, Math.abs(g.delta(i)));
      tr.scale = m;
    }
    g.runSearch();
    g.draw();
    g.idleLabel();
  };

  // idleShare is the idle frame's share of everything, for sample type s.
  Graph.prototype.idleShare = function () {
    var tr = this.full, s = this.sel, sum = 0, k = this.idle;
    if (k < 0) return 0;
    for (var i = 1; i < tr.N;) { if (tr.name[i] === k) { sum += tr.tot[s][i]; i = tr.end[i]; } else i++; }
    return tr.tot[s][0] > 0 ? sum / tr.tot[s][0] : 0;
  };

  Graph.prototype.idleLabel = function () {
    var g = this;
    if (!g.idleBtn) return;
    var p = (100 * g.idleShare()).toFixed(1) + '%';
    g.idleBtn.textContent = g.showIdle ? 'Hide idle (' + p + ')' : 'Show idle (' + p + ' hidden)';
    g.root.setAttribute('data-idle', g.showIdle ? 'shown' : 'hidden');
  };

  // setIdle shows or hides the idle frame; hidden, every share is of the rest.
  Graph.prototype.setIdle = function (show) {
    var g = this;
    g.showIdle = show;
    g.base = show ? g.full : without(g.full, g.idle);
    g.tree = g.base; g.view = 'all'; g.focus = 0; g.selected = -1;
    g.relayout(); g.zoom(0); g.idleLabel();
  };

  Graph.prototype.delta = function (i) {
    var tr = this.tree, bt = tr.base[this.sel][0], ct = tr.tot[this.sel][0];
    return (ct > 0 ? tr.self[i] / ct : 0) - (bt > 0 ? tr.bself[i] / bt : 0);
  };

  Graph.prototype.draw = function () {
    var g = this, tr = g.tree, c = g.canvas, s = g.sel, tot = tr.tot[s];
    var W = c.clientWidth || g.root.clientWidth;
    if (!W) return;
    var H = (tr.maxDepth + 1) * ROW, dpr = window.devicePixelRatio || 1;
    c.style.height = H + 'px';
    c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
    var ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = FONT; ctx.textBaseline = 'middle';
    var charW = ctx.measureText('abcdefghijklmnopqrstuvwxyz_ABCDEF.').width / 34;
    var f = g.focus, ft = Math.max(0, tot[f]), x0 = tr.x[f], k = ft > 0 ? W / ft : 0;
    var rows = g.rows = [];
    for (var r = 0; r <= tr.maxDepth; r++) rows.push([]);
    var icicle = g.icicle, minW = g.minWidth, names = tr.names, match = g.match;
    function rect(i, x, w) {
      var d = tr.depth[i], y = icicle ? d * ROW : H - (d + 1) * ROW;
      var fill;
      if (match && match[tr.name[i]]) fill = 'rgb(230,0,230)';
      else if (tr.base) fill = diffColor(g.delta(i), tr.scale);
      else fill = g.nameColor[tr.name[i]];
      ctx.fillStyle = fill;
      ctx.fillRect(x, y, Math.max(w - 0.5, 0.5), ROW - 1);
      rows[d].push(i, x, w);
      var n = Math.floor((w - 6) / charW);
      if (n >= 3) {
        var k = tr.name[i], name = tr.shorts[k] || names[k];
        // Cut from the left: the function's own name is at the end.
        if (name.length > n) name = '…' + name.slice(name.length - (n - 1));
        ctx.fillStyle = '#000';
        ctx.fillText(name, x + 3, y + ROW / 2);
      }
    }
    // Ancestors of the focus span the whole width, faded.
    ctx.globalAlpha = 0.6;
    for (var a = tr.parent[f]; a >= 0; a = tr.parent[a]) rect(a, 0, W);
    ctx.globalAlpha = 1;
    if (!icicle && g.viewport.scrollHeight > g.viewport.clientHeight && g.lastH !== H) g.viewport.scrollTop = g.viewport.scrollHeight;
    g.lastH = H;
    var end = tr.end[f];
    for (var i = f; i < end;) {
      var w = Math.max(0, tot[i]) * k;
      if (w < minW) { i = tr.end[i]; continue; }
      rect(i, (tr.x[i] - x0) * k, w);
      i++;
    }
    g.crumb();
  };

  Graph.prototype.hit = function (e) {
    var g = this, tr = g.tree, b = g.canvas.getBoundingClientRect();
    var x = e.clientX - b.left, y = e.clientY - b.top, H = (tr.maxDepth + 1) * ROW;
    var d = g.icicle ? Math.floor(y / ROW) : Math.floor((H - y) / ROW);
    var row = g.rows && g.rows[d];
    if (!row) return -1;
    for (var j = 0; j < row.length; j += 3) if (x >= row[j + 1] && x < row[j + 1] + row[j + 2]) return row[j];
    return -1;
  };

  Graph.prototype.hover = function (e) {
    var g = this, i = g.hit(e), tip = g.tip;
    if (i < 0) { tip.style.display = 'none'; return; }
    var tr = g.tree, s = g.sel, u = g.types[s].unit, tot = tr.tot[s], all = tot[0], fz = tot[g.focus];
    var lines = [tr.names[tr.name[i]],
      'total: ' + fmt(tot[i], u) + ' (' + pct(tot[i], all) + ' of all' + (g.focus ? ', ' + pct(tot[i], fz) + ' of zoom' : '') + ')',
      'self: ' + fmt(tr.self[i], u) + ' (' + pct(tr.self[i], all) + ')'];
    if (tr.base) {
      var b = tr.base[s], bt = b[0];
      lines.push('base total: ' + fmt(b[i], u) + ' (' + pct(b[i], bt) + ') → new ' + fmt(tot[i], u) + ' (' + pct(tot[i], all) + ')');
      lines.push('base self: ' + fmt(tr.bself[i], u) + ' (' + pct(tr.bself[i], bt) + ') → new ' + fmt(tr.self[i], u) + ' (' + pct(tr.self[i], all) + ')');
      var d = g.delta(i) * 100;
      lines.push('self share change: ' + (d >= 0 ? '+' : '') + d.toFixed(2) + ' percentage points');
    }
    if (g.view.indexOf('Callers of') === 0) lines.push('(callers view: children are callers)');
    tip.textContent = lines.join('\n');
    var rb = g.root.getBoundingClientRect();
    tip.style.display = 'block';
    var left = e.clientX - rb.left + 12, top = e.clientY - rb.top + 12;
    if (left + tip.offsetWidth > rb.width) left = Math.max(0, rb.width - tip.offsetWidth);
    tip.style.left = left + 'px'; tip.style.top = top + 'px';
  };

  Graph.prototype.zoom = function (i) {
    this.focus = i;
    this.callersBtn.disabled = this.calleesBtn.disabled = this.view !== 'all' || i <= 0;
    this.root.setAttribute('data-focus', this.tree.names[this.tree.name[i]]);
    this.draw();
  };

  Graph.prototype.showAll = function () {
    var g = this;
    if (g.view !== 'all') { g.tree = g.base; g.view = 'all'; g.relayout(); }
    g.selected = -1; g.zoom(0);
  };

  Graph.prototype.crumb = function () {
    var g = this, tr = g.tree, c = g.crumbs, path = [];
    for (var a = g.focus; a >= 0; a = tr.parent[a]) path.unshift(a);
    c.textContent = '';
    if (g.view !== 'all') c.appendChild(el('span', null, g.view + ': '));
    path.forEach(function (i, j) {
      if (j) c.appendChild(el('span', 'sep', ' › '));
      var k = tr.name[i], b = el('button', null, tr.shorts[k] || tr.names[k]);
      b.title = tr.names[k];
      b.addEventListener('click', function () { g.zoom(i); });
      c.appendChild(b);
    });
  };

  Graph.prototype.setSearch = function (text) {
    var g = this;
    g.status.className = 'pcf-status';
    if (!text) { g.re = null; } else {
      try { g.re = new RegExp(text); } catch (err) {
        g.re = null; g.match = null; g.status.className = 'pcf-status err';
        g.status.textContent = 'invalid regular expression: ' + err.message; g.draw(); return;
      }
    }
    g.runSearch(); g.draw();
  };

  // runSearch marks matching names and sums the matched value exactly over
  // the whole tree (not only what is drawn), counting nested matches once.
  Graph.prototype.runSearch = function () {
    var g = this, tr = g.tree;
    if (!g.re) {
      g.match = null;
      if (g.status.className.indexOf('err') < 0) g.status.textContent = tr.tot[g.sel][0] > 0 ? '' : 'No samples of this type.';
      g.root.removeAttribute('data-match');
      return;
    }
    var names = tr.names, m = new Uint8Array(names.length), any = false;
    for (var k = 0; k < names.length; k++) if (g.re.test(names[k])) { m[k] = 1; any = true; }
    g.match = any ? m : null;
    var tot = tr.tot[g.sel], sum = 0, frames = 0;
    for (var i = 1; i < tr.N;) {
      if (m[tr.name[i]]) { sum += tot[i]; frames++; i = tr.end[i]; } else i++;
    }
    var share = pct(sum, tot[0]);
    g.status.textContent = 'Matched: ' + fmt(sum, g.types[g.sel].unit) + ' (' + share + ' of total)';
    g.root.setAttribute('data-match', share);
  };

  // showCallers shows everything that calls the selected function: a tree
  // rooted at it whose children are its callers, their children the callers'
  // callers. Recursive calls count once, at their outermost occurrence.
  Graph.prototype.showCallers = function () {
    var g = this, tr = g.base, i0 = g.selected;
    if (i0 <= 0) return;
    var target = g.tree.name[i0], T = tr.T, D = !!tr.base;
    function mk(n) { return {n: n, v: new Array(T).fill(0), b: new Array(T).fill(0), c: new Map()}; }
    var root = mk(target);
    for (var i = 1; i < tr.N;) {
      if (tr.name[i] !== target) { i++; continue; }
      var x = root, t;
      for (t = 0; t < T; t++) { x.v[t] += tr.tot[t][i]; if (D) x.b[t] += tr.base[t][i]; }
      for (var a = tr.parent[i]; a > 0; a = tr.parent[a]) {
        var y = x.c.get(tr.name[a]);
        if (!y) { y = mk(tr.name[a]); x.c.set(tr.name[a], y); }
        for (t = 0; t < T; t++) { y.v[t] += tr.tot[t][i]; if (D) y.b[t] += tr.base[t][i]; }
        x = y;
      }
      i = tr.end[i];
    }
    g.tree = flatten(root, T, D, tr.names, tr.langs, tr.shorts);
    g.view = 'Callers of ' + tr.names[target];
    g.focus = 0;
    g.relayout();
    g.zoom(0);
  };

  // showCallees shows everything the selected function calls: its subtrees
  // at every call site merged into one, rooted at the function. Recursive
  // calls count once, at their outermost occurrence.
  Graph.prototype.showCallees = function () {
    var g = this, tr = g.base, i0 = g.selected;
    if (i0 <= 0) return;
    var target = g.tree.name[i0], T = tr.T, D = !!tr.base;
    function mk(n) { return {n: n, v: new Array(T).fill(0), b: new Array(T).fill(0), c: new Map()}; }
    var root = mk(target);
    for (var i = 1; i < tr.N;) {
      if (tr.name[i] !== target) { i++; continue; }
      var level = [root], d0 = tr.depth[i];
      for (var j = i; j < tr.end[i]; j++) {
        var d = tr.depth[j] - d0, x;
        if (d === 0) x = root; else {
          var p = level[d - 1];
          x = p.c.get(tr.name[j]);
          if (!x) { x = mk(tr.name[j]); p.c.set(tr.name[j], x); }
        }
        level[d] = x;
        for (var t = 0; t < T; t++) { x.v[t] += tr.tot[t][j]; if (D) x.b[t] += tr.base[t][j]; }
      }
      i = tr.end[i];
    }
    g.tree = flatten(root, T, D, tr.names, tr.langs, tr.shorts);
    g.view = 'Callees of ' + tr.names[target];
    g.focus = 0;
    g.relayout();
    g.zoom(0);
  };

  // testing and embedding hooks
  Graph.prototype.frameRect = function (name) {
    var rows = this.rows || [], tr = this.tree, H = (tr.maxDepth + 1) * ROW;
    for (var d = 0; d < rows.length; d++) for (var j = 0; j < rows[d].length; j += 3) {
      if (tr.names[tr.name[rows[d][j]]] === name) {
        var y = this.icicle ? d * ROW : H - (d + 1) * ROW;
        return {x: rows[d][j + 1], y: y, w: rows[d][j + 2], h: ROW};
      }
    }
    return null;
  };

  function initOne(el) {
    if (el.pcfGraph) return;
    try { el.pcfGraph = new Graph(el); } catch (err) {
      el.textContent = 'flame graph failed: ' + err.message;
      if (window.console) console.error(err);
    }
  }

  // A graph inside a closed <details> (the report's per-target graphs) is
  // built when its section is first opened: a report of many targets then
  // opens as fast as one of a few.
  function initAll() {
    var els = document.querySelectorAll('div.pcf[data-pcf]');
    for (var i = 0; i < els.length; i++) {
      var el = els[i], closed = el.closest && el.closest('details:not([open])');
      if (!closed) { initOne(el); continue; }
      if (closed.pcfWaiting) continue;
      closed.pcfWaiting = true;
      closed.addEventListener('toggle', function (ev) {
        var d = ev.currentTarget;
        if (!d.open) return;
        var inner = d.querySelectorAll('div.pcf[data-pcf]');
        for (var k = 0; k < inner.length; k++) {
          if (!inner[k].closest('details:not([open])')) initOne(inner[k]);
        }
      });
    }
  }
  // render draws a graph of data (the JSON Embed writes) into the element
  // el, replacing what it held: pages that build graphs themselves (the
  // report's timeline spans) use it.
  function render(el, data) {
    el.textContent = '';
    el.pcfGraph = null;
    try { el.pcfGraph = new Graph(el, data); } catch (err) {
      el.textContent = 'flame graph failed: ' + err.message;
      if (window.console) console.error(err);
    }
    return el.pcfGraph;
  }
  window.profcapFlame = {init: initAll, render: render};
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', initAll); else initAll();
})();
