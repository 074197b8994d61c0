/* Switchyard dashboard: fetches /dashboard/data every 10 s and draws it as inline SVG.
 * Plain browser JavaScript, no dependencies. Text that comes from the data (team, alias,
 * provider and rule names) only ever reaches the page through textContent / SVG text nodes. */
(() => {
  'use strict';

  const KEY_STORE = 'switchyard.dashboard.key';
  const MINUTES_STORE = 'switchyard.dashboard.minutes';
  const REFRESH_MS = 10000;
  const WINDOWS = [15, 60, 360, 1440];
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Okabe–Ito: distinguishable with the common forms of colour blindness.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];
  const OTHER_COLOR = '#A3ACB8';
  const MAX_STACKED = 7; // more series than this: the smallest are summed into "other"
  const DATA_URL = location.pathname.replace(/\/+$/, '') + '/data';

  const state = {
    minutes: 60,
    data: null,
    seq: 0,
    timer: 0,
    lastOk: 0,
    failing: false,
  };

  // -- small helpers ------------------------------------------------------------------------

  const $ = (sel, root) => (root || document).querySelector(sel);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      for (const name of Object.keys(attrs)) {
        const value = attrs[name];
        if (value !== undefined && value !== null) node.setAttribute(name, String(value));
      }
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const store = {
    get(name) {
      try { return window.sessionStorage.getItem(name); } catch (e) { return null; }
    },
    set(name, value) {
      try { window.sessionStorage.setItem(name, value); } catch (e) { /* storage disabled: keep going */ }
    },
    remove(name) {
      try { window.sessionStorage.removeItem(name); } catch (e) { /* storage disabled */ }
    },
  };

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const num = (v) => (isNum(v) ? v : null);
  const sum = (values) => values.reduce((acc, v) => acc + (isNum(v) ? v : 0), 0);
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  /** A series as exactly `n` numbers-or-null. */
  function column(values, n) {
    const out = new Array(n);
    for (let i = 0; i < n; i += 1) out[i] = Array.isArray(values) ? num(values[i]) : null;
    return out;
  }

  /** values[i] / totals[i], null where there is no denominator. */
  function ratio(values, totals) {
    return values.map((v, i) => {
      const d = totals[i];
      if (!isNum(d) || d <= 0) return null;
      return clamp((isNum(v) ? v : 0) / d, 0, 1);
    });
  }

  // -- number formats -----------------------------------------------------------------------

  const MINUS = '\u2212';

  function fmtUSD(v) {
    if (!isNum(v)) return '—';
    if (v === 0) return '$0.00';
    const a = Math.abs(v);
    const sign = v < 0 ? MINUS : '';
    let s;
    if (a >= 1000) {
      s = a.toLocaleString('en-US', { maximumFractionDigits: 0 });
    } else if (a >= 1) {
      s = a.toFixed(2);
    } else {
      // three significant digits, however small: $0.0123, $0.000456
      const decimals = Math.min(10, 2 - Math.floor(Math.log10(a)));
      s = a.toFixed(decimals).replace(/(\.\d\d\d*?)0+$/, '$1');
    }
    return sign + '$' + s;
  }

  function fmtCount(v) {
    if (!isNum(v)) return '—';
    const r = Math.round(v);
    if (Math.abs(r) >= 1e6) return (r / 1e6).toFixed(2).replace(/\.?0+$/, '') + 'M';
    return r.toLocaleString('en-US');
  }

  function fmtPct(r) {
    if (!isNum(r)) return '—';
    return (r * 100).toFixed(1).replace(/\.0$/, '') + '%';
  }

  function fmtMs(v) {
    if (!isNum(v)) return '—';
    if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (v >= 10) return v.toFixed(0) + ' ms';
    if (v >= 1) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }

  const pad2 = (v) => String(v).padStart(2, '0');

  function fmtClock(sec, withSeconds) {
    if (!isNum(sec)) return '—';
    const d = new Date(sec * 1000);
    const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
    return withSeconds ? hm + ':' + pad2(d.getSeconds()) : hm;
  }

  function fmtDuration(seconds) {
    if (!isNum(seconds) || seconds <= 0) return '—';
    if (seconds < 60) return Math.round(seconds) + ' s';
    const minutes = seconds / 60;
    if (minutes < 60) return (Number.isInteger(minutes) ? minutes : minutes.toFixed(1)) + ' min';
    const hours = minutes / 60;
    return (Number.isInteger(hours) ? hours : hours.toFixed(1)) + ' h';
  }

  function utcOffsetLabel() {
    const off = -new Date().getTimezoneOffset();
    const sign = off >= 0 ? '+' : MINUS;
    const a = Math.abs(off);
    return 'UTC' + sign + pad2(Math.floor(a / 60)) + ':' + pad2(a % 60);
  }

  /** Axis tick labels: a fixed number of decimals, enough for the step. */
  function decimalsFor(step) {
    for (let d = 0; d <= 10; d += 1) {
      const scaled = step * 10 ** d;
      if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
    }
    return 10;
  }

  const AXIS = {
    usd(v, d) {
      if (v === 0) return '$0';
      const sign = v < 0 ? MINUS : '';
      const a = Math.abs(v);
      return sign + '$' + (a >= 1000 ? a.toLocaleString('en-US', { maximumFractionDigits: d }) : a.toFixed(d));
    },
    count(v, d) { return v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }); },
    pct(v) { return Math.round(v * 100) + '%'; },
    ms(v, d) { return v.toLocaleString('en-US', { maximumFractionDigits: d }); },
  };

  // -- scales -------------------------------------------------------------------------------

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(raw));
    const m = raw / power;
    const nice = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
    return nice * power;
  }

  function yScale(lo, hi, opts) {
    let min = Math.min(0, lo);
    let max = Math.max(0, hi);
    if (opts.fixed) {
      min = opts.fixed[0];
      max = opts.fixed[1];
    }
    if (max - min <= 0) max = min + (opts.integer ? 4 : 1);
    let step = niceStep((max - min) / 4);
    if (opts.integer) step = Math.max(1, Math.round(step));
    const from = Math.floor(min / step + 1e-9) * step;
    const to = Math.ceil(max / step - 1e-9) * step;
    const ticks = [];
    for (let v = from; v <= to + step / 2; v += step) ticks.push(Math.abs(v) < step / 1e6 ? 0 : v);
    return { min: from, max: to, ticks, decimals: decimalsFor(step) };
  }

  const TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  function timeTicks(t0, t1, maxTicks) {
    const span = Math.max(1, t1 - t0);
    const step = TIME_STEPS.find((s) => span / s <= maxTicks) || 86400;
    const offset = new Date(t0 * 1000).getTimezoneOffset() * 60; // local midnight alignment
    const ticks = [];
    let tick = Math.ceil((t0 - offset) / step) * step + offset;
    for (; tick <= t1; tick += step) ticks.push(tick);
    return ticks;
  }

  // -- charts -------------------------------------------------------------------------------

  const tooltip = () => $('#tooltip');

  function hideTooltip() {
    const tip = tooltip();
    if (tip) tip.hidden = true;
  }

  function colorize(series) {
    const names = series.map((s) => s.name).filter((n) => n !== null).sort();
    for (const s of series) {
      if (!s.color) s.color = s.other ? OTHER_COLOR : PALETTE[names.indexOf(s.name) % PALETTE.length];
    }
    return series;
  }

  /** {name: [...]} → series sorted by total (largest first), the tail folded into "other". */
  function stackedSeries(map, n) {
    const entries = map && typeof map === 'object' && !Array.isArray(map) ? Object.keys(map) : [];
    let series = entries.map((name) => {
      const values = column(map[name], n);
      return { name, values, total: sum(values) };
    });
    series.sort((a, b) => b.total - a.total || (a.name < b.name ? -1 : 1));
    if (series.length > MAX_STACKED) {
      const kept = series.slice(0, MAX_STACKED - 1);
      const rest = series.slice(MAX_STACKED - 1);
      const values = new Array(n).fill(null).map((_, i) => {
        let any = false;
        let acc = 0;
        for (const s of rest) {
          if (isNum(s.values[i])) { any = true; acc += s.values[i]; }
        }
        return any ? acc : null;
      });
      kept.push({ name: 'other (' + rest.length + ')', values, total: sum(values), other: true });
      series = kept;
    }
    return colorize(series);
  }

  /**
   * Draw one chart into its card.
   * spec: {id, kind: 'bars'|'lines', t, bucket, series: [{name, values, color, dash, area}],
   *        axis: AXIS.x, unit, fmt (value format), fixed: [lo, hi], integer, note, legendValue, empty}
   */
  function drawChart(spec) {
    const host = document.querySelector('[data-chart-host="' + spec.id + '"]');
    if (!host) return;
    const card = host.closest('.card');
    const W = Math.max(240, Math.round(host.clientWidth || 420));
    const H = Math.max(140, Math.round(host.clientHeight || 210));
    const n = spec.t.length;
    const stacked = spec.kind === 'bars';

    // y domain
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < n; i += 1) {
      let pos = 0;
      let neg = 0;
      for (const s of spec.series) {
        const v = s.values[i];
        if (!isNum(v)) continue;
        if (stacked) {
          if (v > 0) pos += v; else neg += v;
        } else {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
      if (stacked) {
        hi = Math.max(hi, pos);
        lo = Math.min(lo, neg);
      }
    }
    const y = yScale(lo, hi, { fixed: spec.fixed, integer: spec.integer });
    const labels = y.ticks.map((v) => spec.axis(v, y.decimals));
    const labelWidth = Math.max(...labels.map((s) => s.length)) * 6.4;
    const m = { top: 26, right: 12, bottom: 24, left: Math.max(34, Math.ceil(labelWidth) + 12) };
    const pw = W - m.left - m.right;
    const ph = H - m.top - m.bottom;
    const step = pw / Math.max(1, n);
    const Y = (v) => m.top + ph - ((v - y.min) / (y.max - y.min)) * ph;
    const Xc = (i) => m.left + (i + 0.5) * step;

    const root = svg('svg', {
      viewBox: '0 0 ' + W + ' ' + H,
      role: 'img',
      'data-chart': spec.id,
      'aria-label': (card ? $('.card-title', card).textContent : spec.id) + ', ' + spec.unit,
    });

    // grid and y axis
    const grid = svg('g');
    y.ticks.forEach((v, k) => {
      const yy = Math.round(Y(v)) + 0.5;
      grid.appendChild(svg('line', { x1: m.left, x2: W - m.right, y1: yy, y2: yy, class: v === 0 ? 'zero' : 'gridline' }));
      grid.appendChild(svg('text', { x: m.left - 8, y: yy + 3.5, 'text-anchor': 'end' }, labels[k]));
    });
    root.appendChild(grid);
    root.appendChild(svg('text', { x: 0, y: 11, class: 'unit' }, spec.unit));

    // x axis: local clock times
    const t0 = n ? spec.t[0] : 0;
    const tEnd = n ? spec.t[n - 1] + spec.bucket : 0;
    const xAxis = svg('g');
    xAxis.appendChild(svg('line', { x1: m.left, x2: W - m.right, y1: m.top + ph + 0.5, y2: m.top + ph + 0.5, class: 'axis' }));
    if (n) {
      const maxTicks = Math.max(2, Math.floor(pw / 64));
      for (const tick of timeTicks(t0, tEnd, maxTicks)) {
        const x = Math.round(m.left + ((tick - t0) / (tEnd - t0)) * pw) + 0.5;
        if (x < m.left - 1 || x > W - m.right + 1) continue;
        xAxis.appendChild(svg('line', { x1: x, x2: x, y1: m.top + ph, y2: m.top + ph + 4, class: 'axis' }));
        const anchor = x < m.left + 16 ? 'start' : x > W - m.right - 16 ? 'end' : 'middle';
        xAxis.appendChild(svg('text', { x, y: m.top + ph + 16, 'text-anchor': anchor }, fmtClock(tick)));
      }
    }
    root.appendChild(xAxis);

    // marks
    let points = 0;
    const marks = svg('g');
    if (stacked) {
      const bw = step >= 3 ? Math.max(1, step * 0.72) : Math.max(0.6, step);
      for (let i = 0; i < n; i += 1) {
        let pos = 0;
        let neg = 0;
        for (const s of spec.series) {
          const v = s.values[i];
          if (!isNum(v) || v === 0) continue;
          const base = v > 0 ? pos : neg;
          const top = base + v;
          if (v > 0) pos = top; else neg = top;
          let y0 = Y(Math.max(base, top));
          let h = Math.abs(Y(base) - Y(top));
          if (h < 1) { // a tiny amount still shows
            if (v > 0) y0 -= 1 - h;
            h = 1;
          }
          marks.appendChild(svg('rect', { x: (Xc(i) - bw / 2).toFixed(2), y: y0.toFixed(2), width: bw.toFixed(2), height: h.toFixed(2), fill: s.color }));
          points += 1;
        }
      }
    } else {
      for (const s of spec.series) {
        let d = '';
        let run = [];
        const flush = () => {
          if (run.length === 1) {
            const [i, v] = run[0];
            marks.appendChild(svg('circle', { cx: Xc(i).toFixed(2), cy: Y(v).toFixed(2), r: 3, fill: s.color }));
          } else if (run.length > 1) {
            const seg = run.map(([i, v], k) => (k ? 'L' : 'M') + Xc(i).toFixed(2) + ' ' + Y(v).toFixed(2)).join('');
            d += seg;
            if (s.area) {
              const first = Xc(run[0][0]).toFixed(2);
              const last = Xc(run[run.length - 1][0]).toFixed(2);
              const base = Y(Math.max(y.min, 0)).toFixed(2);
              marks.insertBefore(svg('path', {
                d: seg + 'L' + last + ' ' + base + 'L' + first + ' ' + base + 'Z',
                fill: s.color,
                'fill-opacity': 0.12,
                stroke: 'none',
              }), marks.firstChild);
            }
          }
          run = [];
        };
        for (let i = 0; i < n; i += 1) {
          const v = s.values[i];
          if (isNum(v)) {
            run.push([i, v]);
            points += 1;
          } else {
            flush();
          }
        }
        flush();
        if (d) {
          marks.appendChild(svg('path', {
            d,
            fill: 'none',
            stroke: s.color,
            'stroke-width': s.width || 2,
            'stroke-linejoin': 'round',
            'stroke-linecap': 'round',
            'stroke-dasharray': s.dash || null,
          }));
        }
      }
    }
    root.appendChild(marks);
    root.setAttribute('data-points', String(points));
    root.setAttribute('data-series', String(spec.series.length));

    if (!points || spec.forceEmpty) {
      root.appendChild(svg('text', { x: m.left + pw / 2, y: m.top + ph / 2 + 4, 'text-anchor': 'middle', class: 'empty' },
        spec.empty || 'No data in this window'));
    }

    // hover: a guide line and a tooltip with every series at that bucket
    if (n) {
      const guide = stacked
        ? svg('rect', { class: 'bar-hl', y: m.top, height: ph, width: step, x: m.left, visibility: 'hidden' })
        : svg('line', { class: 'guide', y1: m.top, y2: m.top + ph, x1: 0, x2: 0, visibility: 'hidden' });
      root.appendChild(guide);
      const hit = svg('rect', { class: 'hover', x: m.left, y: m.top, width: pw, height: ph });
      hit.addEventListener('mousemove', (ev) => {
        const box = root.getBoundingClientRect();
        const x = ((ev.clientX - box.left) / box.width) * W;
        const i = clamp(Math.floor((x - m.left) / step), 0, n - 1);
        if (stacked) {
          guide.setAttribute('x', (m.left + i * step).toFixed(2));
          guide.setAttribute('width', step.toFixed(2));
        } else {
          guide.setAttribute('x1', Xc(i).toFixed(2));
          guide.setAttribute('x2', Xc(i).toFixed(2));
        }
        guide.setAttribute('visibility', 'visible');
        showTooltip(ev, spec, i);
      });
      hit.addEventListener('mouseleave', () => {
        guide.setAttribute('visibility', 'hidden');
        hideTooltip();
      });
      root.appendChild(hit);
    }

    host.replaceChildren(root);

    if (card) {
      const note = $('.card-note', card);
      if (note) note.textContent = spec.note || '';
      const legend = $('.legend', card);
      if (legend) drawLegend(legend, spec);
    }
  }

  function swatchFor(s, kind) {
    if (kind === 'bars') {
      const sw = el('span', 'swatch');
      sw.style.background = s.color;
      return sw;
    }
    const sw = el('span', 'swatch-line' + (s.dash ? (s.dash.startsWith('1') ? ' dotted' : ' dashed') : ''));
    sw.style.borderTopColor = s.color;
    return sw;
  }

  function drawLegend(legend, spec) {
    const items = spec.series.map((s) => {
      const item = el('span', 'legend-item');
      item.appendChild(swatchFor(s, spec.kind));
      const name = el('span', 'legend-name', s.name);
      name.title = s.name;
      item.appendChild(name);
      if (spec.legendValue) item.appendChild(el('span', 'legend-value', spec.legendValue(s)));
      return item;
    });
    if (!items.length) items.push(el('span', 'legend-value', spec.emptyLegend || ''));
    legend.replaceChildren(...items);
  }

  function showTooltip(ev, spec, i) {
    const tip = tooltip();
    if (!tip) return;
    const start = spec.t[i];
    const rows = [el('div', 'tt-time', fmtClock(start) + '–' + fmtClock(start + spec.bucket))];
    let total = 0;
    let any = false;
    for (const s of spec.series) {
      const v = s.values[i];
      const row = el('div', 'tt-row');
      row.appendChild(swatchFor(s, spec.kind));
      row.appendChild(el('span', 'tt-name', s.name));
      row.appendChild(el('span', 'tt-val', isNum(v) ? spec.fmt(v) : '—'));
      rows.push(row);
      if (isNum(v)) { total += v; any = true; }
    }
    if (spec.kind === 'bars' && spec.series.length > 1) {
      const row = el('div', 'tt-row');
      row.appendChild(el('span', 'tt-name', 'total'));
      row.appendChild(el('span', 'tt-val', any ? spec.fmt(total) : '—'));
      rows.push(row);
    }
    tip.replaceChildren(...rows);
    tip.hidden = false;
    const pad = 14;
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    let left = ev.clientX + pad;
    let top = ev.clientY + pad;
    if (left + w > window.innerWidth - 4) left = ev.clientX - pad - w;
    if (top + h > window.innerHeight - 4) top = ev.clientY - pad - h;
    tip.style.left = Math.max(4, left) + 'px';
    tip.style.top = Math.max(4, top) + 'px';
  }

  // -- rendering the whole page -------------------------------------------------------------

  function setKpi(id, value, sub, extra) {
    const tile = document.querySelector('[data-kpi="' + id + '"]');
    if (!tile) return;
    const valueEl = $('.kpi-value', tile);
    valueEl.className = 'kpi-value' + (extra && extra.tone ? ' ' + extra.tone : '');
    if (extra && extra.secondary !== undefined) {
      valueEl.replaceChildren(document.createTextNode(value), el('span', 'secondary', ' / ' + extra.secondary));
    } else {
      valueEl.textContent = value;
    }
    $('.kpi-sub', tile).textContent = sub || '\u00a0';
    const raw = extra && extra.raw !== undefined ? extra.raw : null;
    tile.setAttribute('data-value', raw === null ? '' : String(raw));
  }

  function windowLabel(minutes) {
    if (minutes < 60) return minutes + ' min';
    const h = minutes / 60;
    return (Number.isInteger(h) ? h : h.toFixed(1)) + ' h';
  }

  function renderKpis(data, s) {
    const totals = data.totals && typeof data.totals === 'object' ? data.totals : {};
    const T = (name) => num(totals[name]);
    const minutes = num(data.minutes) || state.minutes;
    const requests = T('requests');
    const spend = T('spend_usd');
    const savings = T('savings_usd');

    setKpi('spend', fmtUSD(spend), 'last ' + windowLabel(minutes), { raw: spend });

    let savingsSub = 'vs the reference closed model';
    if (isNum(savings) && isNum(spend) && spend + savings > 0) {
      const saved = savings / (spend + savings);
      savingsSub = saved >= 0 ? fmtPct(saved) + ' less than all-closed' : fmtPct(-saved) + ' more than all-closed';
    }
    setKpi('savings', fmtUSD(savings), savingsSub,
      { raw: savings, tone: isNum(savings) && savings > 0 ? 'good' : isNum(savings) && savings < 0 ? 'bad' : '' });

    const perMin = isNum(requests) && minutes ? requests / minutes : null;
    setKpi('requests', fmtCount(requests),
      isNum(perMin) ? (perMin >= 10 ? perMin.toFixed(0) : perMin.toFixed(2).replace(/\.?0+$/, '')) + ' per minute' : '',
      { raw: requests });

    const selfHosted = sum(s.selfHosted);
    setKpi('self_hosted_share', fmtPct(T('self_hosted_share')),
      isNum(requests) && requests > 0 ? fmtCount(selfHosted) + ' of ' + fmtCount(requests) + ' on your hardware' : 'no requests',
      { raw: T('self_hosted_share') });

    const hits = sum(s.cacheHits);
    setKpi('cache_hit_rate', fmtPct(T('cache_hit_rate')),
      isNum(requests) && requests > 0 ? fmtCount(hits) + (hits === 1 ? ' hit' : ' hits') + ', served at $0' : 'no requests',
      { raw: T('cache_hit_rate') });

    setKpi('latency', fmtMs(T('latency_p50_ms')), 'whole request, p50 / p99',
      { secondary: fmtMs(T('latency_p99_ms')), raw: T('latency_p50_ms') });
    setKpi('ttft', fmtMs(T('ttft_p50_ms')), 'streams: first token, p50 / p99',
      { secondary: fmtMs(T('ttft_p99_ms')), raw: T('ttft_p50_ms') });

    const errors = T('errors') || 0;
    const denied = T('denied') || 0;
    const plural = (v, one, many) => fmtCount(v) + ' ' + (v === 1 ? one : many);
    setKpi('events', fmtCount(errors), plural(T('fallbacks') || 0, 'fallback', 'fallbacks') + ' · ' +
      plural(T('spillovers') || 0, 'spillover', 'spillovers') + ' · ' +
      plural(T('recoveries') || 0, 'recovery', 'recoveries') + ' · ' +
      plural(T('hedges') || 0, 'hedge', 'hedges'),
    { secondary: fmtCount(denied), raw: errors, tone: errors > 0 ? 'bad' : '' });
    const eventsTile = document.querySelector('[data-kpi="events"]');
    if (eventsTile) eventsTile.setAttribute('data-denied', String(denied));
  }

  function renderCharts(data, s) {
    const n = s.t.length;
    const bucket = num(data.bucket_s) || 60;
    const per = 'per ' + fmtDuration(bucket);
    const totals = data.totals && typeof data.totals === 'object' ? data.totals : {};
    const noTraffic = !(num(totals.requests) > 0);
    const empty = noTraffic ? 'No traffic yet' : 'No data in this window';
    const series = data.series && typeof data.series === 'object' ? data.series : {};
    const common = { t: s.t, bucket };

    const spendChart = (id, key, what) => {
      const list = stackedSeries(series[key], n);
      const total = list.reduce((acc, x) => acc + x.total, 0);
      drawChart({
        ...common,
        id,
        kind: 'bars',
        series: list,
        axis: AXIS.usd,
        fmt: fmtUSD,
        unit: 'USD ' + per,
        note: list.length ? 'total ' + fmtUSD(total) : '',
        legendValue: (x) => fmtUSD(x.total),
        empty: noTraffic ? empty : 'No spend in this window',
        emptyLegend: 'no ' + what + ' with spend yet',
      });
    };
    spendChart('spend_by_team', 'spend_by_team', 'team');
    spendChart('spend_by_model', 'spend_by_model', 'alias');
    spendChart('spend_by_provider', 'spend_by_provider', 'provider');

    const savings = column(series.savings_usd, n);
    drawChart({
      ...common,
      id: 'savings',
      kind: 'bars',
      series: [{ name: 'saved vs all-closed', values: savings, color: '#009E73', total: sum(savings) }],
      axis: AXIS.usd,
      fmt: fmtUSD,
      unit: 'USD ' + per,
      note: 'total ' + fmtUSD(sum(savings)),
      legendValue: (x) => fmtUSD(x.total),
      empty: noTraffic ? empty : 'No savings in this window',
    });

    const shareValues = ratio(s.selfHosted, s.requests);
    drawChart({
      ...common,
      id: 'self_hosted_share',
      kind: 'lines',
      series: [{ name: 'self-hosted', values: shareValues, color: '#009E73', area: true }],
      axis: AXIS.pct,
      fixed: [0, 1],
      fmt: fmtPct,
      unit: '% of requests',
      note: 'overall ' + fmtPct(num(totals.self_hosted_share)),
      legendValue: () => fmtCount(sum(s.selfHosted)) + ' of ' + fmtCount(sum(s.requests)) + ' requests',
      empty,
    });

    const cacheValues = ratio(s.cacheHits, s.requests);
    drawChart({
      ...common,
      id: 'cache_hit_rate',
      kind: 'lines',
      series: [{ name: 'cache hits', values: cacheValues, color: '#CC79A7', area: true }],
      axis: AXIS.pct,
      fixed: [0, 1],
      fmt: fmtPct,
      unit: '% of requests',
      note: 'overall ' + fmtPct(num(totals.cache_hit_rate)),
      legendValue: () => fmtCount(sum(s.cacheHits)) + ' hits',
      empty,
    });

    const events = [
      ['fallbacks', 'fallbacks', '#0072B2', null],
      ['spillovers', 'spillovers', '#E69F00', '6 3'],
      ['recoveries', 'recoveries', '#009E73', '1.5 3'],
      ['errors', 'errors', '#D55E00', null],
      ['denied', 'denied', '#CC79A7', '8 3 2 3'],
      ['hedges', 'hedges', '#56B4E9', '2 2'],
    ].map(([key, name, color, dash]) => {
      const values = column(series[key], n);
      return { name, values, color, dash, total: sum(values) };
    });
    drawChart({
      ...common,
      id: 'events',
      kind: 'lines',
      series: events,
      axis: AXIS.count,
      integer: true,
      fmt: fmtCount,
      unit: 'events ' + per,
      note: fmtCount(events.reduce((acc, e) => acc + e.total, 0)) + ' in window',
      legendValue: (x) => fmtCount(x.total),
      empty,
      forceEmpty: noTraffic,
    });

    const pctChart = (id, p50key, p99key, what) => {
      const p50 = column(series[p50key], n);
      const p99 = column(series[p99key], n);
      drawChart({
        ...common,
        id,
        kind: 'lines',
        series: [
          { name: 'p50', values: p50, color: '#0072B2', total: num(totals[p50key]) },
          { name: 'p99', values: p99, color: '#D55E00', dash: '6 3', total: num(totals[p99key]) },
        ],
        axis: AXIS.ms,
        fmt: fmtMs,
        unit: 'milliseconds',
        note: 'window p50 ' + fmtMs(num(totals[p50key])) + ' · p99 ' + fmtMs(num(totals[p99key])),
        legendValue: (x) => fmtMs(x.total),
        empty: noTraffic ? empty : 'No ' + what + ' in this window',
      });
    };
    pctChart('latency', 'latency_p50_ms', 'latency_p99_ms', 'completed requests');
    pctChart('ttft', 'ttft_p50_ms', 'ttft_p99_ms', 'streamed requests');
  }

  function meter(fraction, cls) {
    const wrap = el('div', 'meter' + (cls ? ' ' + cls : ''));
    const bar = el('span');
    bar.style.width = (clamp(isNum(fraction) ? fraction : 0, 0, 1) * 100).toFixed(1) + '%';
    wrap.appendChild(bar);
    wrap.title = fmtPct(fraction);
    return wrap;
  }

  function emptyRow(cols, text) {
    const tr = el('tr', 'empty-row');
    const td = el('td', '', text);
    td.colSpan = cols;
    tr.appendChild(td);
    return tr;
  }

  function renderTables(data) {
    const totals = data.totals && typeof data.totals === 'object' ? data.totals : {};
    const allRequests = num(totals.requests) || 0;

    const rules = Array.isArray(data.top_rules) ? data.top_rules.filter((r) => r && typeof r === 'object') : [];
    const ruleRows = rules.slice(0, 10).map((r) => {
      const tr = el('tr');
      const requests = num(r.requests) || 0;
      tr.appendChild(el('td', 'name', r.rule === undefined || r.rule === null ? '(no rule)' : r.rule));
      tr.appendChild(el('td', 'num', fmtCount(requests)));
      const share = el('td');
      share.appendChild(meter(allRequests > 0 ? requests / allRequests : 0));
      tr.appendChild(share);
      tr.appendChild(el('td', 'num', fmtUSD(num(r.spend_usd))));
      return tr;
    });
    $('#rules-table tbody').replaceChildren(...(ruleRows.length ? ruleRows : [emptyRow(4, 'No rule matched in this window')]));

    const teams = data.teams && typeof data.teams === 'object' && !Array.isArray(data.teams) ? data.teams : {};
    const names = Object.keys(teams).filter((k) => teams[k] && typeof teams[k] === 'object');
    names.sort((a, b) => (num(teams[b].spend_usd) || 0) - (num(teams[a].spend_usd) || 0) || (a < b ? -1 : 1));
    const teamSpend = names.reduce((acc, k) => acc + (num(teams[k].spend_usd) || 0), 0);
    const teamRows = names.map((name) => {
      const team = teams[name];
      const spend = num(team.spend_usd) || 0;
      const tr = el('tr');
      tr.setAttribute('data-team', name);
      tr.appendChild(el('td', 'name', name));
      tr.appendChild(el('td', 'num', fmtUSD(spend)));
      const share = el('td');
      share.appendChild(meter(teamSpend > 0 ? spend / teamSpend : 0, 'teams'));
      tr.appendChild(share);
      const left = num(team.budget_remaining_usd);
      let cell;
      if (left === null) cell = el('td', 'num muted', 'no budget');
      else if (left <= 0) cell = el('td', 'num low', 'exhausted');
      else cell = el('td', 'num', fmtUSD(left));
      tr.appendChild(cell);
      return tr;
    });
    $('#teams-table tbody').replaceChildren(...(teamRows.length ? teamRows : [emptyRow(4, 'No team traffic in this window')]));
  }

  function renderEconomics(data) {
    const eco = data.economics && typeof data.economics === 'object' ? data.economics : {};
    const gpus = Array.isArray(eco.gpus) ? eco.gpus.filter((g) => g && typeof g === 'object') : [];
    const rows = gpus.map((g) => {
      const tr = el('tr');
      tr.setAttribute('data-gpu', String(g.backend));
      tr.appendChild(el('td', 'name', String(g.backend)));
      tr.appendChild(el('td', 'num', fmtUSD(num(g.gpu_hour_usd))));
      tr.appendChild(el('td', 'num', fmtCount(num(g.served_tokens) || 0)));
      tr.appendChild(el('td', 'num', fmtPct(num(g.utilisation))));
      const perM = num(g.amortised_usd_per_mtok);
      tr.appendChild(el('td', 'num' + (perM === null ? ' muted' : ''), perM === null ? 'nothing served' : fmtUSD(perM)));
      const be = g.break_even && typeof g.break_even === 'object' ? g.break_even : {};
      const parts = Object.keys(be).sort().map((m) => {
        const u = num(be[m]);
        return m + ': ' + (u === null ? '—' : u > 1 ? 'never (' + fmtPct(u) + ')' : fmtPct(u));
      });
      const cell = el('td', parts.length ? '' : 'muted', parts.length ? parts.join(' · ') : 'no closed model priced');
      cell.setAttribute('data-break-even', JSON.stringify(be));
      tr.appendChild(cell);
      return tr;
    });
    $('#economics-table tbody').replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No self-hosted backend with price.gpu_hour_usd')]));
    const owned = num(eco.owned_usd), marginal = num(eco.marginal_usd), closed = num(eco.all_closed_usd);
    $('#economics-note').textContent = 'this window: marginal ' + fmtUSD(marginal) + ' · owned (with GPU hours) ' +
      fmtUSD(owned) + (closed === null ? '' : ' · all-closed ' + fmtUSD(closed));
  }

  function renderBackends(data) {
    const backends = Array.isArray(data.backends) ? data.backends.filter((b) => b && typeof b === 'object') : [];
    const rows = [];
    const stateCell = (state, good) => el('td', state === good ? 'muted' : 'low', state);
    const queueText = (q) => (isNum(num(q)) ? fmtCount(num(q)) : '—');
    for (const b of backends) {
      const replicas = Array.isArray(b.replicas) ? b.replicas.filter((r) => r && typeof r === 'object') : null;
      const tr = el('tr');
      tr.setAttribute('data-backend', String(b.name));
      tr.appendChild(el('td', 'name', String(b.name) + (b.self_hosted ? ' (self-hosted)' : '')));
      tr.appendChild(el('td', 'muted', replicas ? 'pool of ' + replicas.length : '—'));
      tr.appendChild(el('td', 'num', fmtCount(num(b.in_flight) || 0)));
      tr.appendChild(el('td', 'num', queueText(b.queue)));
      tr.appendChild(stateCell('circuit ' + String(b.circuit), 'circuit closed'));
      rows.push(tr);
      for (const r of replicas || []) {
        const rr = el('tr', 'replica');
        rr.setAttribute('data-replica', String(r.address));
        rr.appendChild(el('td', 'muted', '↳'));
        rr.appendChild(el('td', 'name', String(r.address)));
        rr.appendChild(el('td', 'num', fmtCount(num(r.in_flight) || 0)));
        rr.appendChild(el('td', 'num', queueText(r.queue)));
        rr.appendChild(stateCell(String(r.state), 'ok'));
        rows.push(rr);
      }
    }
    $('#backends-table tbody').replaceChildren(...(rows.length ? rows : [emptyRow(5, 'No backend in the policy')]));
  }

  function render(data) {
    if (!data || typeof data !== 'object') return;
    hideTooltip();
    const s = normalised(data);

    const source = data.source === 'redis' ? 'Redis · all replicas' : data.source === 'memory' ? 'memory · this process' : String(data.source || 'unknown');
    $('#source').textContent = 'source: ' + source;
    $('#generated').textContent = 'generated ' + fmtClock(num(data.generated_at), true);

    renderKpis(data, s);
    renderCharts(data, s);
    renderTables(data);
    renderEconomics(data);
    renderBackends(data);

    const totals = data.totals && typeof data.totals === 'object' ? data.totals : {};
    if (!(num(totals.requests) > 0)) {
      showBanner('No traffic yet in the last ' + windowLabel(num(data.minutes) || state.minutes) +
        '. Charts fill in as requests go through /v1/*.', false);
    } else if (!state.failing) {
      hideBanner();
    }
    $('#footnote').textContent = 'Times are local (' + utcOffsetLabel() + '). Buckets of ' +
      fmtDuration(num(data.bucket_s) || 60) + '; refreshes every ' + REFRESH_MS / 1000 + ' s. Spend is in USD.';
  }

  // -- status, banner, key form -------------------------------------------------------------

  function showBanner(text, isError) {
    const banner = $('#banner');
    banner.textContent = text;
    banner.className = 'banner' + (isError ? ' error' : '');
    banner.hidden = false;
  }

  function hideBanner() {
    $('#banner').hidden = true;
  }

  function setStatus(kind) {
    const dot = $('#status-dot');
    dot.className = 'dot ' + kind;
    updateClock();
  }

  function updateClock() {
    const text = $('#updated-text');
    if (!$('#key-overlay').hidden) {
      text.textContent = 'waiting for a key';
      return;
    }
    if (!state.lastOk) {
      text.textContent = state.failing ? 'not updated' : 'loading…';
      return;
    }
    const ago = Math.max(0, Math.round((Date.now() - state.lastOk) / 1000));
    const when = fmtClock(state.lastOk / 1000, true);
    text.textContent = (state.failing ? 'update failed · last ok ' : 'last updated ') + when + ' (' + ago + ' s ago)';
  }

  function askForKey(message) {
    const overlay = $('#key-overlay');
    $('#key-error').textContent = message || '';
    $('#forget-key').hidden = true;
    if (overlay.hidden) {
      overlay.hidden = false;
      const input = $('#key-input');
      input.value = '';
      input.focus();
    }
  }

  function hideKeyForm() {
    $('#key-overlay').hidden = true;
    $('#forget-key').hidden = !store.get(KEY_STORE);
  }

  function takeKeyFromFragment() {
    const match = /(?:^#|&)key=([^&]*)/.exec(location.hash || '');
    if (!match) return;
    let key = match[1];
    try { key = decodeURIComponent(key); } catch (e) { /* keep it raw */ }
    if (key) store.set(KEY_STORE, key);
    // never leave the key in the address bar, the history or a screenshot
    history.replaceState(history.state, '', location.pathname + location.search);
  }

  // -- the refresh loop ---------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    clearTimeout(state.timer);
    const seq = ++state.seq;
    setStatus('busy');
    const key = store.get(KEY_STORE);
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = 'Bearer ' + key;
    let response;
    try {
      response = await fetch(DATA_URL + '?minutes=' + encodeURIComponent(state.minutes),
        { headers, cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      if (seq !== state.seq) return;
      state.failing = true;
      showBanner('The gateway did not answer; retrying every ' + REFRESH_MS / 1000 + ' s.', true);
      setStatus('err');
      schedule();
      return;
    }
    if (seq !== state.seq) return;
    if (response.status === 401 || response.status === 403) {
      store.remove(KEY_STORE);
      state.failing = false;
      hideBanner();
      askForKey(key ? (response.status === 401 ? 'That key was not accepted.'
        : 'That key may not read the dashboard: use the admin key or a dashboard key.') : '');
      setStatus('err');
      return; // no polling until a key is entered
    }
    let data = null;
    let problem = '';
    if (!response.ok) {
      problem = 'The gateway answered HTTP ' + response.status + ' for ' + DATA_URL + '.';
    } else {
      try {
        data = await response.json();
      } catch (e) {
        problem = 'The gateway sent data this page cannot read.';
      }
    }
    if (seq !== state.seq) return;
    if (!data || typeof data !== 'object') {
      state.failing = true;
      showBanner((problem || 'No data.') + ' Retrying every ' + REFRESH_MS / 1000 + ' s.', true);
      setStatus('err');
      schedule();
      return;
    }
    state.data = data;
    state.lastOk = Date.now();
    state.failing = false;
    hideKeyForm();
    hideBanner();
    render(data);
    setStatus('ok');
    schedule();
  }

  function selectMinutes(minutes) {
    state.minutes = minutes;
    store.set(MINUTES_STORE, String(minutes));
    for (const button of document.querySelectorAll('#minutes button')) {
      button.setAttribute('aria-pressed', String(Number(button.dataset.minutes) === minutes));
    }
  }

  function init() {
    takeKeyFromFragment();
    const fromQuery = Number(new URLSearchParams(location.search).get('minutes'));
    const fromStore = Number(store.get(MINUTES_STORE));
    selectMinutes(WINDOWS.includes(fromQuery) ? fromQuery : WINDOWS.includes(fromStore) ? fromStore : 60);

    $('#minutes').addEventListener('click', (ev) => {
      const button = ev.target.closest('button[data-minutes]');
      if (!button) return;
      selectMinutes(Number(button.dataset.minutes));
      refresh();
    });

    $('#key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('#key-input').value.trim();
      if (!key) {
        $('#key-error').textContent = 'Enter a key.';
        return;
      }
      store.set(KEY_STORE, key);
      $('#key-input').value = '';
      $('#key-overlay').hidden = true;
      refresh();
    });

    $('#forget-key').addEventListener('click', () => {
      store.remove(KEY_STORE);
      clearTimeout(state.timer);
      refresh();
    });

    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.data) renderCharts(state.data, normalised(state.data)); }, 150);
    });
    window.addEventListener('scroll', hideTooltip, { passive: true });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && $('#key-overlay').hidden && Date.now() - state.lastOk > REFRESH_MS) refresh();
    });
    setInterval(updateClock, 1000);
    refresh();
  }

  function normalised(data) {
    const t = Array.isArray(data.t) ? data.t.map(num) : [];
    const series = data.series && typeof data.series === 'object' ? data.series : {};
    return {
      t: t.map((v, i) => (isNum(v) ? v : (isNum(t[0]) ? t[0] : 0) + i * (num(data.bucket_s) || 60))),
      requests: column(series.requests, t.length),
      selfHosted: column(series.self_hosted_requests, t.length),
      cacheHits: column(series.cache_hits, t.length),
    };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
