/*
 * Heronry charts: small uPlot wrapper. Plain ES2020 script; needs
 * vendor/uplot/uPlot.iife.min.js (+ uPlot.min.css) loaded first.
 * Exposes window.Heronry.charts.
 *
 *   Heronry.charts.line(el, {x: [...], series: [{label, values}], time?, height?, xIntegers?})
 *   <div data-chart='{"x": [1,2,3], "series": [{"label": "reward", "values": [0.1,0.4,0.3]}]}'></div>
 *
 * A series with "axis": "right" gets its own scale and y axis on the right
 * (yLabel / y2Label name the two axes): quantities in different units, such as
 * true and learned return, are never squeezed onto one axis.
 *
 * x is numeric (steps); set "time": true for unix-second timestamps. Height:
 * data-chart-height / opts.height (default 240 px). Width follows the container.
 */
(function () {
  'use strict';

  const Heronry = (window.Heronry = window.Heronry || {});
  if (Heronry.charts) return;

  const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2'];
  const charts = new Map(); // element -> {plot, ro}

  function cssVar(el, name, fallback) {
    const v = getComputedStyle(el).getPropertyValue(name).trim();
    return v || fallback;
  }

  function destroy(el) {
    const c = charts.get(el);
    if (!c) return;
    c.ro.disconnect();
    c.plot.destroy();
    charts.delete(el);
  }

  function line(el, data, opts) {
    if (!window.uPlot) throw new Error('Heronry.charts: uPlot is not loaded');
    opts = Object.assign({}, data, opts);
    destroy(el);
    const x = Array.isArray(data.x) ? data.x : [];
    const series = Array.isArray(data.series) ? data.series : [];
    const text = getComputedStyle(el).color || '#222';
    const grid = cssVar(el, '--border', 'rgba(127,127,127,0.25)');
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const height = parseInt(el.dataset.chartHeight || opts.height || 240, 10);
    const width = () => Math.max(120, Math.floor(el.clientWidth || el.getBoundingClientRect().width || 600));
    const twoAxes = series.some((s) => s.axis === 'right');
    const scales = { x: { time: !!opts.time }, y: {} };
    const axes = [
      // Whole-number x (epochs, iterations): no ticks between them.
      Object.assign({ label: opts.xLabel || undefined }, axis, opts.xIntegers ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] } : {}),
      // Wide enough for negative thousands ("-1,500") without clipping the sign.
      Object.assign({ scale: 'y', label: opts.yLabel || undefined, size: 64 }, axis),
    ];
    if (twoAxes) {
      scales.y2 = {};
      // The right axis draws no grid of its own: two grids in one plot read as one misaligned scale.
      axes.push(Object.assign({}, axis, { scale: 'y2', side: 1, size: 64, label: opts.y2Label || undefined, grid: { show: false } }));
    }
    const plot = new window.uPlot(
      {
        width: width(),
        height,
        scales,
        axes,
        series: [{ label: opts.xLabel || 'x' }].concat(
          series.map((s, i) => ({
            scale: s.axis === 'right' ? 'y2' : 'y',
            label: s.label || 'series ' + (i + 1),
            stroke: s.color || cssVar(el, '--chart-' + (i + 1), PALETTE[i % PALETTE.length]),
            width: 2,
            spanGaps: true,
            points: { show: x.length <= 60 },
          })),
        ),
      },
      [x].concat(series.map((s) => (Array.isArray(s.values) ? s.values.map((v) => (v == null ? null : +v)) : []))),
      el,
    );
    let lastW = width();
    const ro = new ResizeObserver(() => {
      if (!el.isConnected) return destroy(el);
      const w = width();
      if (w !== lastW) { lastW = w; plot.setSize({ width: w, height }); }
    });
    ro.observe(el);
    charts.set(el, { plot, ro });
    return plot;
  }

  function init(root) {
    root = root || document;
    const els = [];
    if (root.matches && root.matches('[data-chart]')) els.push(root);
    if (root.querySelectorAll) els.push(...root.querySelectorAll('[data-chart]'));
    for (const el of els) {
      if (charts.has(el)) continue;
      try {
        line(el, JSON.parse(el.getAttribute('data-chart')));
      } catch (err) {
        el.textContent = 'Chart unavailable.';
        if (window.console) console.warn('Heronry.charts:', err);
      }
    }
    for (const el of Array.from(charts.keys())) if (!el.isConnected) destroy(el);
  }

  Heronry.charts = { line, init, destroy, get: (el) => (charts.get(el) || {}).plot || null };

  document.addEventListener('htmx:load', (e) => init(e.detail && e.detail.elt ? e.detail.elt : e.target));
  document.addEventListener('htmx:beforeCleanupElement', (e) => { if (charts.has(e.target)) destroy(e.target); });
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => init(document));
  else init(document);
})();
