// profcap report: the timeline. Dragging across a row of a kind selects a
// span of seconds; the flame graph of that span (of that target, or of all
// targets) is built from the per-second stacks embedded in
// #timeline-data and drawn with profcapFlame.render. Names reach the page
// only as text.
(function () {
  'use strict';
  var script = document.getElementById('timeline-data');
  if (!script) return;
  var kinds = {};
  try {
    JSON.parse(script.textContent).forEach(function (k) { kinds[k.kind] = k; });
  } catch (err) {
    if (window.console) console.error(err);
    return;
  }

  // spanData builds the flame graph data of seconds [a, b] of target
  // (row index, or -1 for every target).
  function spanData(k, target, a, b) {
    var names = k.names.slice(), shorts = (k.shorts || []).slice(), langs = k.langs.slice();
    var rootName = names.length;
    names.push('all'); shorts.push(''); langs.push(8);
    function mk(n) { return {n: n, v: 0, c: new Map()}; }
    var root = mk(rootName), recs = k.recs;
    for (var i = 0; i < recs.length; i += 4) {
      var sec = recs[i + 2];
      if (sec < a || sec > b || (target >= 0 && recs[i + 1] !== target)) continue;
      var v = recs[i + 3], st = k.stacks[recs[i]], x = root;
      x.v += v;
      for (var j = 0; j < st.length; j++) {
        var y = x.c.get(st[j]);
        if (!y) { y = mk(st[j]); x.c.set(st[j], y); }
        y.v += v;
        x = y;
      }
    }
    var nodes = [];
    (function walk(x) {
      var kids = Array.from(x.c.values());
      kids.sort(function (p, q) { return names[p.n] < names[q.n] ? -1 : names[p.n] > names[q.n] ? 1 : 0; });
      nodes.push(x.n, kids.length, x.v);
      kids.forEach(walk);
    })(root);
    return {title: k.title, types: k.types, sel: 0, diff: false, reverse: false, icicle: true, minWidth: 0,
      names: names, shorts: shorts, langs: langs, idle: k.idle, showIdle: false, nodes: nodes, total: root.v};
  }

  function select(box, row, a, b) {
    var kind = box.getAttribute('data-kind'), k = kinds[kind];
    if (!k || !k.recs) return null;
    var name = row.getAttribute('data-target'), target = name ? k.targets.indexOf(name) : -1;
    if (name && target < 0) return null;
    if (a > b) { var t = a; a = b; b = t; }
    var status = box.querySelector('.tl-span-status'), holder = box.querySelector('.tl-span');
    var data = spanData(k, target, a, b);
    var what = (name || 'all targets') + ', second' + (a === b ? ' ' + a : 's ' + a + '–' + b);
    data.title = kind + ' — ' + what;
    status.textContent = data.total > 0 ? 'Selected ' + what + '.' : 'Nothing recorded in ' + what + '.';
    box.setAttribute('data-span', what);
    if (window.profcapFlame) window.profcapFlame.render(holder, data);
    return data;
  }

  function mark(svg, a, b, n) {
    var r = svg.querySelector('rect.tl-sel');
    if (!r) { r = document.createElementNS(svg.namespaceURI, 'rect'); r.setAttribute('class', 'tl-sel'); r.setAttribute('y', '0'); r.setAttribute('height', '100'); svg.appendChild(r); }
    if (a > b) { var t = a; a = b; b = t; }
    r.setAttribute('x', String(100 * a / n));
    r.setAttribute('width', String(100 * (b - a + 1) / n));
  }

  function clearMarks(box) {
    var rs = box.querySelectorAll('rect.tl-sel');
    for (var i = 0; i < rs.length; i++) rs[i].parentNode.removeChild(rs[i]);
  }

  var boxes = document.querySelectorAll('.tl-kind');
  Array.prototype.forEach.call(boxes, function (box) {
    var n = +box.getAttribute('data-seconds') || 1;
    Array.prototype.forEach.call(box.querySelectorAll('.tl-row'), function (row) {
      var svg = row.querySelector('svg');
      if (!svg) return;
      var down = -1;
      function sec(e) {
        var r = svg.getBoundingClientRect();
        return Math.max(0, Math.min(n - 1, Math.floor((e.clientX - r.left) / r.width * n)));
      }
      svg.addEventListener('mousedown', function (e) { e.preventDefault(); down = sec(e); clearMarks(box); mark(svg, down, down, n); });
      svg.addEventListener('mousemove', function (e) { if (down >= 0) mark(svg, down, sec(e), n); });
      window.addEventListener('mouseup', function (e) {
        if (down < 0) return;
        var a = down, b = sec(e);
        down = -1;
        select(box, row, a, b);
      });
    });
  });

  // selectSpan selects seconds a..b of kind for target ("" for all), as a
  // drag does: for tests and links.
  window.profcapReport = {
    selectSpan: function (kind, target, a, b) {
      var box = document.querySelector('.tl-kind[data-kind="' + kind + '"]');
      if (!box) return null;
      var rows = box.querySelectorAll('.tl-row'), row = null;
      for (var i = 0; i < rows.length; i++) if (rows[i].getAttribute('data-target') === target) row = rows[i];
      if (!row) return null;
      clearMarks(box);
      mark(row.querySelector('svg'), a, b, +box.getAttribute('data-seconds') || 1);
      var d = select(box, row, a, b);
      return d ? d.total : null;
    }
  };
})();
