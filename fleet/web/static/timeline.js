// The flight recorder (issue 16): an event's Evidence (GET /api/events/{id}/evidence, or
// the answer to an on-demand request) drawn as a timeline in SVG, in the page, with
// nothing fetched from outside. One lane per signal on a shared time axis: position in
// floors (door zones shaded), speed, door state, the lock and safety circuits, mode, load
// and occupancy; onset, raise and clear marked. A sample whose link_up is false is drawn
// as unknown (a hatched gap across every lane), never as a zero. Hover, keyboard and a
// drag select a time; the table view lists the same samples; CSV comes from the API and
// PNG is drawn in the browser (SVG -> canvas), with no server round trip.
//
// app.js hands every call a context (its t, label, fmtTime, api, h, put, message, badge,
// section): the helpers and the language are app.js's, so this file keeps no state of its
// own beyond the figure it draws. Colours are SVG presentation attributes, not CSS
// classes, so that the PNG export (an SVG rendered as an image, without the page's CSS)
// looks like the page.
"use strict";
(() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 960;
  const LEFT = 96;
  const RIGHT = 16;
  const TOP = 34;
  const GAP = 8;
  const AXIS = 26;
  const PLOT_W = W - LEFT - RIGHT;
  const FONT = "system-ui, 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', sans-serif";
  // Each lane: its label key, height, and whether it is a band of states or a line.
  const LANES = [
    { key: "position", h: 170 },
    { key: "speed", h: 80 },
    { key: "door", h: 22 },
    { key: "lock", h: 16 },
    { key: "safety", h: 16 },
    { key: "mode", h: 20 },
    { key: "load", h: 56 },
    { key: "occupied", h: 16 },
  ];
  const DOOR_FILL = {
    closed: "#5b6b7d", open: "#d97706", opening: "#f2c078", closing: "#9ab6d6", partly_open: "#eda04f",
  };
  const MODE_FILL = {
    normal: "#cfe9d6", stopped: "#f7c6c3", inspection: "#fbe3a0", fire_return: "#f4a9a2",
    firefighter: "#f4a9a2", emergency_power: "#dccbf2", earthquake: "#f2c4df",
  };
  const TRUE_FILL = "#2e7d4f";
  const FALSE_FILL = "#b3261e";
  const INK = "#1b1f24";
  const MUTED = "#4a5360";
  const GRID = "#d0d7de";
  const ZONE = "#8fd19e";
  const MARKER = { onset: "#8a1c13", raised: "#b3261e", cleared: "#11572a" };
  let figures = 0;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function median(values) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)];
  }

  // -- labels ------------------------------------------------------------------------

  // The API's lower-case names ("partly_open", "unknown") as the catalogue's keys.
  const upper = (value) => String(value || "unknown").toUpperCase();
  const doorText = (ctx, door) => ctx.label("door", door === "unknown" || !door ? "UNSPECIFIED" : upper(door));
  const dirText = (ctx, dir) => ctx.label("dir", dir === "unknown" || !dir ? "UNSPECIFIED" : upper(dir));
  const modeText = (ctx, mode) => ctx.label("mode", upper(mode));
  const yesNo = (ctx, v, yes, no) => (v === null || v === undefined ? ctx.t("rec.unknown") : ctx.t(v ? yes : no));

  function metres(ctx, mm) {
    return mm === null || mm === undefined ? ctx.t("rec.unknown") : ctx.t("rec.m", { n: (mm / 1000).toFixed(3) });
  }

  function speedText(ctx, mms) {
    return mms === null || mms === undefined ? ctx.t("rec.unknown") : ctx.t("rec.m_s", { n: (mms / 1000).toFixed(2) });
  }

  function numberOr(ctx, v, key) {
    return v === null || v === undefined ? ctx.t("rec.unknown") : (key ? ctx.t(key, { n: v }) : String(v));
  }

  // Site time with tenths of a second: samples are 100 ms apart at 10 Hz. The formatters
  // are kept: building one costs about a millisecond, and the table view formats a time
  // per sample (thousands of them).
  const clocks = new Map();
  function clock(ctx, ms, tenths) {
    const lang = ctx.state.lang === "zh" ? "zh-CN" : "en-GB";
    const key = `${lang} ${ctx.state.site.time_zone} ${tenths ? 1 : 0}`;
    if (!clocks.has(key)) {
      const opts = {
        timeZone: ctx.state.site.time_zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
      };
      if (tenths) opts.fractionalSecondDigits = 1;
      clocks.set(key, new Intl.DateTimeFormat(lang, opts));
    }
    return clocks.get(key).format(new Date(ms));
  }

  // The values a sample shows in the readout and the table, in reading order.
  function sampleValues(ctx, s) {
    if (!s.link_up) {
      return [[ctx.t("rec.link"), ctx.t("rec.link_down")]];
    }
    return [
      [ctx.t("rec.floor"), numberOr(ctx, s.floor)],
      [ctx.t("rec.position"), metres(ctx, s.position_mm)],
      [ctx.t("rec.speed"), speedText(ctx, s.speed_mm_s)],
      [ctx.t("rec.direction"), dirText(ctx, s.direction)],
      [ctx.t("rec.door"), doorText(ctx, s.door)],
      [ctx.t("rec.lock"), yesNo(ctx, s.door_lock_closed, "rec.made", "rec.broken")],
      [ctx.t("rec.safety"), yesNo(ctx, s.safety_circuit_closed, "rec.made", "rec.broken")],
      [ctx.t("rec.mode"), modeText(ctx, s.mode)],
      [ctx.t("rec.load"), numberOr(ctx, s.load_percent, "rec.percent")],
      [ctx.t("rec.occupied"), yesNo(ctx, s.occupied, "rec.occupied_yes", "rec.occupied_no")],
    ];
  }

  // -- the model ----------------------------------------------------------------------

  // The samples on one axis: ms since the window's start (the API's t_ms), each sample
  // holding until the next one (the last for one typical interval).
  function model(evidence) {
    const start = Date.parse(evidence.start);
    const samples = evidence.samples.map((s) => ({ ...s, ms: s.t_ms }));
    const steps = samples.slice(1).map((s, i) => s.ms - samples[i].ms).filter((d) => d > 0);
    const step = median(steps) || 100;
    const end = samples.length ? samples.at(-1).ms + step : step;
    const at = (iso) => (iso ? Date.parse(iso) - start : null);
    // The window has no landing table: a landing is where the car stood levelled at a
    // known floor, so each floor's position is the median position of those samples.
    const byFloor = new Map();
    for (const s of samples) {
      if (s.link_up && s.levelled === true && s.floor !== null && s.position_mm !== null) {
        if (!byFloor.has(s.floor)) byFloor.set(s.floor, []);
        byFloor.get(s.floor).push(s.position_mm);
      }
    }
    const landings = [...byFloor].map(([floor, ps]) => ({ floor, mm: median(ps) })).sort((a, b) => a.mm - b.mm);
    // Nor a door-zone table: a door zone is the span of positions a run of samples in the
    // controller's door_zone covered (standing at a landing, or passing one); spans that
    // overlap are one zone.
    const spans = [];
    let span = null;
    for (const s of samples) {
      if (s.link_up && s.door_zone === true && s.position_mm !== null) {
        span = span || { low: s.position_mm, high: s.position_mm };
        span.low = Math.min(span.low, s.position_mm);
        span.high = Math.max(span.high, s.position_mm);
      } else if (span) { spans.push(span); span = null; }
    }
    if (span) spans.push(span);
    const zones = [];
    for (const z of spans.sort((a, b) => a.low - b.low)) {
      const last = zones.at(-1);
      if (last && z.low <= last.high) last.high = Math.max(last.high, z.high);
      else zones.push({ ...z });
    }
    return {
      evidence, start, samples, step, end, landings, zones,
      marks: [["onset", at(evidence.onset)], ["raised", at(evidence.raised)], ["cleared", at(evidence.cleared)]]
        .filter(([, ms]) => ms !== null),
    };
  }

  // Runs of equal value over samples [i0, i1): [{from, to, value}] in ms.
  function runs(m, valueOf) {
    const out = [];
    m.samples.forEach((s, i) => {
      const value = s.link_up ? valueOf(s) : "gap";
      const to = i + 1 < m.samples.length ? m.samples[i + 1].ms : m.end;
      const last = out.at(-1);
      if (last && last.value === value) last.to = to;
      else out.push({ from: s.ms, to, value });
    });
    return out;
  }

  // -- drawing ------------------------------------------------------------------------

  function niceStep(span) {
    const steps = [100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000];
    return steps.find((s) => span / s <= 8) || 1800000;
  }

  function laneTops() {
    let y = TOP;
    return LANES.map((lane) => { const top = y; y += lane.h + GAP; return { ...lane, top }; });
  }

  function height() {
    const lanes = laneTops();
    const last = lanes.at(-1);
    return last.top + last.h + AXIS;
  }

  // The whole SVG for the view [a, b) ms since start.
  function drawSvg(ctx, m, view, ids) {
    const H = height();
    const x = (ms) => LEFT + ((ms - view.a) / (view.b - view.a)) * PLOT_W;
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-labelledby": `${ids.title} ${ids.desc}`,
      class: "timeline-svg", "font-family": FONT, "font-size": 11, "data-samples": m.samples.length,
      "data-visible": m.samples.filter((s) => s.ms >= view.a && s.ms < view.b).length,
      "data-view-from": Math.round(view.a), "data-view-to": Math.round(view.b),
    });
    const typeText = m.evidence.event_type ? ctx.label("event", m.evidence.event_type) : ctx.t("rec.on_demand");
    root.append(
      svg("title", { id: ids.title }, ctx.t("rec.svg_title", { type: typeText })),
      svg("desc", { id: ids.desc }, ctx.t("rec.svg_desc", {
        n: m.samples.length, from: clock(ctx, m.start), to: clock(ctx, m.start + m.end),
      })));
    const defs = svg("defs");
    const hatch = svg("pattern", { id: ids.hatch, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
    hatch.append(svg("rect", { width: 6, height: 6, fill: "#eceef1" }), svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#9aa3ad", "stroke-width": 2 }));
    const clip = svg("clipPath", { id: ids.clip });
    clip.append(svg("rect", { x: LEFT, y: 0, width: PLOT_W, height: H }));
    defs.append(hatch, clip);
    root.append(defs, svg("rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" }));
    const plot = svg("g", { "clip-path": `url(#${ids.clip})` });
    const lanes = laneTops();
    const gapFill = `url(#${ids.hatch})`;
    const band = (lane, valueOf, fillOf, attr, textOf) => {
      const g = svg("g", { "data-lane": lane.key });
      for (const run of runs(m, valueOf)) {
        if (run.to <= view.a || run.from >= view.b) continue;
        const x0 = Math.max(LEFT - 1, x(run.from)), x1 = Math.min(W - RIGHT + 1, x(run.to));
        const unknown = run.value === "gap" || run.value === null || run.value === undefined || run.value === "unknown";
        g.append(svg("rect", {
          x: x0.toFixed(1), y: lane.top, width: Math.max(0.5, x1 - x0).toFixed(1), height: lane.h,
          fill: unknown ? gapFill : fillOf(run.value), [`data-${attr}`]: unknown ? "unknown" : String(run.value),
        }));
        if (textOf && !unknown && x1 - x0 > 70) {
          g.append(svg("text", { x: (x0 + 4).toFixed(1), y: lane.top + lane.h - 6, fill: INK }, textOf(run.value)));
        }
      }
      return g;
    };
    const line = (lane, key, y, color) => {
      const g = svg("g", { "data-lane": lane.key });
      let points = [];
      const flush = () => {
        if (points.length) {
          g.append(svg("polyline", {
            points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2,
            "stroke-linejoin": "round", "data-series": key, "data-points": points.length,
          }));
        }
        points = [];
      };
      // A sample without a value (the link down, or the controller not reporting it)
      // ends the line: the gap shows that nothing is known there, not a zero.
      for (const s of m.samples) {
        if (!s.link_up || s[key] === null || s[key] === undefined) { flush(); continue; }
        points.push(`${x(s.ms).toFixed(1)},${y(s[key]).toFixed(1)}`);
      }
      flush();
      return g;
    };
    const laneOf = (key) => lanes.find((l) => l.key === key);

    // position, in floors
    const pos = laneOf("position");
    const known = m.samples.filter((s) => s.link_up && s.position_mm !== null).map((s) => s.position_mm);
    const all = [...known, ...m.landings.map((l) => l.mm)];
    let lo = all.length ? Math.min(...all) : 0, hi = all.length ? Math.max(...all) : 1;
    const pad = Math.max(200, (hi - lo) * 0.08);
    lo -= pad; hi += pad;
    const yPos = (mm) => pos.top + pos.h - ((mm - lo) / (hi - lo)) * pos.h;
    const posG = svg("g", { "data-lane": "position-zones" });
    for (const run of runs(m, (s) => s.door_zone === true)) {
      if (run.value !== true || run.to <= view.a || run.from >= view.b) continue;
      posG.append(svg("rect", {
        x: x(run.from).toFixed(1), y: pos.top, width: Math.max(0.5, x(run.to) - x(run.from)).toFixed(1), height: pos.h,
        fill: ZONE, "fill-opacity": 0.12, "data-zone": "time",
      }));
    }
    for (const zone of m.zones) {
      const y0 = yPos(zone.high) - 2, y1 = yPos(zone.low) + 2;
      posG.append(svg("rect", { x: LEFT, y: y0.toFixed(1), width: PLOT_W, height: (y1 - y0).toFixed(1), fill: ZONE, "fill-opacity": 0.4, "data-zone": "position" }));
    }
    for (const landing of m.landings) {
      posG.append(svg("line", {
        x1: LEFT, x2: W - RIGHT, y1: yPos(landing.mm).toFixed(1), y2: yPos(landing.mm).toFixed(1),
        stroke: MUTED, "stroke-dasharray": "4 3", "data-landing": landing.floor,
      }));
    }
    plot.append(posG, line(pos, "position_mm", yPos, "#0a58a6"));
    // speed
    const spd = laneOf("speed");
    const speeds = m.samples.filter((s) => s.link_up && s.speed_mm_s !== null).map((s) => s.speed_mm_s);
    // A little headroom, so that the top speed is not drawn on the lane's border.
    const sLo = Math.min(0, ...speeds) * 1.12, sHi = Math.max(1, ...speeds) * 1.12;
    const ySpd = (v) => spd.top + spd.h - ((v - sLo) / (sHi - sLo || 1)) * spd.h;
    plot.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: ySpd(0), y2: ySpd(0), stroke: GRID }), line(spd, "speed_mm_s", ySpd, "#6f42c1"));
    // the bands
    const bool = (key) => (s) => s[key];
    const circuit = (v) => (v ? TRUE_FILL : FALSE_FILL);
    plot.append(
      band(laneOf("door"), (s) => (s.door === "unknown" ? null : s.door), (v) => DOOR_FILL[v] || GRID, "door", (v) => doorText(ctx, v)),
      band(laneOf("lock"), bool("door_lock_closed"), circuit, "lock"),
      band(laneOf("safety"), bool("safety_circuit_closed"), circuit, "safety"),
      band(laneOf("mode"), (s) => (s.mode === "unknown" ? null : s.mode), (v) => MODE_FILL[v] || GRID, "mode", (v) => modeText(ctx, v)),
    );
    const load = laneOf("load");
    const loads = m.samples.filter((s) => s.link_up && s.load_percent !== null).map((s) => s.load_percent);
    const lHi = Math.max(100, ...loads) * 1.12;
    const yLoad = (v) => load.top + load.h - (v / lHi) * load.h;
    plot.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: yLoad(100), y2: yLoad(100), stroke: GRID, "stroke-dasharray": "2 3" }),
      line(load, "load_percent", yLoad, "#8a5a00"));
    plot.append(band(laneOf("occupied"), bool("occupied"), (v) => (v ? "#0b4f6c" : "#dfe3e8"), "occupied"));
    // Link down: unknown across every lane, labelled once.
    for (const run of runs(m, () => "up")) {
      if (run.value !== "gap" || run.to <= view.a || run.from >= view.b) continue;
      const x0 = Math.max(LEFT, x(run.from)), x1 = Math.min(W - RIGHT, x(run.to));
      plot.append(svg("rect", {
        x: x0.toFixed(1), y: TOP, width: Math.max(0.5, x1 - x0).toFixed(1), height: lanes.at(-1).top + lanes.at(-1).h - TOP,
        fill: gapFill, "fill-opacity": 0.85, "data-gap": "link_down",
      }));
      if (x1 - x0 > 60) plot.append(svg("text", { x: x0 + 4, y: TOP + 14, fill: INK }, ctx.t("rec.link_down")));
    }
    // onset, raise and clear
    for (const [kind, ms] of m.marks) {
      if (ms < view.a || ms > view.b) continue;
      const xm = x(ms).toFixed(1);
      plot.append(
        svg("line", { x1: xm, x2: xm, y1: TOP - 6, y2: H - AXIS, stroke: MARKER[kind], "stroke-width": 2, "stroke-dasharray": kind === "onset" ? "5 3" : null, "data-marker": kind }),
        // The raise's label a line lower: onset and raise can be a second apart.
        svg("text", { x: Number(xm) + 3, y: kind === "raised" ? TOP - 2 : TOP - 14, fill: MARKER[kind], "font-weight": 700, "data-marker-label": kind }, ctx.t(`rec.mark_${kind}`)));
    }
    root.append(plot);
    // Lane labels and axes, outside the clip.
    for (const lane of lanes) {
      root.append(svg("text", { x: 4, y: lane.top + Math.min(lane.h, 24) / 2 + 4, fill: INK, "font-weight": 600 }, ctx.t(`rec.lane_${lane.key}`)));
      root.append(svg("rect", { x: LEFT, y: lane.top, width: PLOT_W, height: lane.h, fill: "none", stroke: GRID }));
    }
    for (const landing of m.landings) {
      const y = yPos(landing.mm);
      if (y > pos.top + 44 && y < pos.top + pos.h - 14) root.append(svg("text", { x: LEFT - 4, y: y + 4, fill: MUTED, "text-anchor": "end" }, ctx.t("rec.floor_n", { n: landing.floor })));
    }
    // The position's range in metres at the lane's top and bottom, floors or not.
    if (known.length) {
      root.append(svg("text", { x: LEFT - 4, y: pos.top + 32, fill: MUTED, "text-anchor": "end" }, metres(ctx, hi - pad)),
        svg("text", { x: LEFT - 4, y: pos.top + pos.h - 2, fill: MUTED, "text-anchor": "end" }, metres(ctx, lo + pad)));
    }
    // The speed lane's scale: zero, and the fastest speed of the window where it is drawn.
    const fastest = Math.max(0, ...speeds);
    root.append(svg("text", { x: LEFT - 4, y: Math.min(spd.top + spd.h - 2, ySpd(0) + 4), fill: MUTED, "text-anchor": "end" }, speedText(ctx, 0)));
    if (fastest > 0) root.append(svg("text", { x: LEFT - 4, y: Math.max(spd.top + 24, ySpd(fastest) + 4), fill: MUTED, "text-anchor": "end" }, speedText(ctx, fastest)));
    root.append(svg("text", { x: LEFT - 4, y: yLoad(100) + 10, fill: MUTED, "text-anchor": "end" }, ctx.t("rec.percent", { n: 100 })));
    const axisY = H - AXIS;
    root.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: axisY, y2: axisY, stroke: MUTED }));
    const step = niceStep(view.b - view.a);
    for (let ms = Math.ceil((m.start + view.a) / step) * step - m.start; ms <= view.b; ms += step) {
      const xt = x(ms);
      root.append(svg("line", { x1: xt, x2: xt, y1: axisY, y2: axisY + 4, stroke: MUTED }),
        svg("text", { x: xt, y: axisY + 16, fill: MUTED, "text-anchor": xt > W - RIGHT - 30 ? "end" : xt < LEFT + 30 ? "start" : "middle" },
          clock(ctx, m.start + ms, step < 1000)));
    }
    // The crosshair and the drag selection live in the same SVG, drawn on top.
    const cross = svg("line", { x1: 0, x2: 0, y1: TOP - 6, y2: axisY, stroke: INK, "stroke-width": 1, visibility: "hidden", "data-crosshair": "" });
    const select = svg("rect", { x: 0, y: TOP, width: 0, height: axisY - TOP, fill: "#0a58a6", "fill-opacity": 0.15, visibility: "hidden", "data-selection": "" });
    const hit = svg("rect", { x: LEFT, y: 0, width: PLOT_W, height: H, fill: "transparent", "data-hit": "", "pointer-events": "all" });
    root.append(cross, select, hit);
    return { root, x, cross, select, hit };
  }

  function legend(ctx) {
    const h = ctx.h;
    const key = (fill, text) => h("span", { className: "tl-key" }, swatch(fill), text);
    const swatch = (fill) => {
      const s = svg("svg", { width: 14, height: 10, "aria-hidden": "true", focusable: "false" });
      s.append(svg("rect", { width: 14, height: 10, fill, stroke: GRID }));
      return s;
    };
    return h("p", { className: "tl-legend" },
      Object.entries(DOOR_FILL).map(([d, fill]) => key(fill, ctx.t("rec.kv", { k: ctx.t("rec.door"), v: doorText(ctx, d) }))),
      key(TRUE_FILL, ctx.t("rec.made")), key(FALSE_FILL, ctx.t("rec.broken")),
      key(ZONE, ctx.t("rec.door_zone")), key("#eceef1", ctx.t("rec.unknown_key")));
  }

  // -- the table view -------------------------------------------------------------------

  const TABLE = ["rec.time", "rec.link", "rec.floor", "rec.position", "rec.speed", "rec.direction", "rec.door",
    "rec.lock", "rec.safety", "rec.mode", "rec.load", "rec.occupied", "rec.door_zone", "rec.levelled",
    "rec.fault_code", "rec.alarm_button", "rec.overload", "rec.mains_ok", "rec.reopen_active"];

  // Rows per page of the table view: a browser lays a table of thousands of rows out in
  // seconds (a 600 s window at 10 Hz is 6,000 samples), a page of 500 at once.
  const TABLE_PAGE = 500;

  function tableView(ctx, m) {
    const h = ctx.h;
    const yn = (v) => yesNo(ctx, v, "common.yes", "common.no");
    const unknown = ctx.t("rec.unknown");
    const row = (s) => {
      const cells = s.link_up ? [
        ctx.t("rec.link_up"), numberOr(ctx, s.floor), metres(ctx, s.position_mm), speedText(ctx, s.speed_mm_s),
        dirText(ctx, s.direction), doorText(ctx, s.door),
        yesNo(ctx, s.door_lock_closed, "rec.made", "rec.broken"), yesNo(ctx, s.safety_circuit_closed, "rec.made", "rec.broken"),
        modeText(ctx, s.mode), numberOr(ctx, s.load_percent, "rec.percent"), yn(s.occupied), yn(s.door_zone), yn(s.levelled),
        numberOr(ctx, s.fault_code), yn(s.alarm_button), yn(s.overload), yn(s.mains_ok), yn(s.reopen_active),
      ] : [ctx.t("rec.link_down"), ...TABLE.slice(2).map(() => unknown)];
      return h("tr", { "data-link": s.link_up ? "up" : "down" },
        h("th", { scope: "row", text: clock(ctx, m.start + s.ms, true) }), cells.map((c) => h("td", { text: c })));
    };
    const pages = Math.max(1, Math.ceil(m.samples.length / TABLE_PAGE));
    const body = h("tbody");
    const status = h("span", { className: "tl-page", role: "status" });
    const prev = h("button", { type: "button", "data-page": "prev" }, ctx.t("rec.page_prev"));
    const next = h("button", { type: "button", "data-page": "next" }, ctx.t("rec.page_next"));
    let page = 0;
    const show = (n) => {
      page = Math.max(0, Math.min(pages - 1, n));
      const from = page * TABLE_PAGE;
      const rows = m.samples.slice(from, from + TABLE_PAGE);
      ctx.put(body, rows.map(row));
      ctx.put(status, ctx.t("rec.page", { from: from + 1, to: from + rows.length, total: m.samples.length }));
      prev.disabled = page === 0;
      next.disabled = page === pages - 1;
    };
    prev.addEventListener("click", () => show(page - 1));
    next.addEventListener("click", () => show(page + 1));
    show(0);
    return h("div", {},
      pages > 1 ? h("p", { className: "tl-tools" }, prev, next, status) : null,
      h("div", { className: "scroll tl-table", tabindex: "0", role: "region", "aria-label": ctx.t("rec.table_label") },
        h("table", { "data-samples": m.samples.length },
          h("thead", {}, h("tr", {}, TABLE.map((c) => h("th", { scope: "col", text: ctx.t(c) })))),
          body)));
  }

  // -- exports ----------------------------------------------------------------------------

  function download(href, name) {
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
  }

  // The SVG as it is drawn, rendered to a canvas in the browser and saved as PNG.
  async function savePng(svgNode, name) {
    const clone = svgNode.cloneNode(true);
    clone.setAttribute("xmlns", NS);
    for (const node of clone.querySelectorAll("[data-hit], [data-selection]")) node.remove();
    const text = new XMLSerializer().serializeToString(clone);
    const image = new Image();
    image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`;
    await image.decode();
    const scale = 2;
    const canvas = document.createElement("canvas");
    canvas.width = W * scale;
    canvas.height = height() * scale;
    const g = canvas.getContext("2d");
    g.scale(scale, scale);
    g.drawImage(image, 0, 0, W, height());
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const url = URL.createObjectURL(blob);
    download(url, name);
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // CSV for an on-demand answer, which has no event to link to: the same columns as the
  // samples' JSON keys, built here from the samples shown.
  function csvOf(evidence) {
    const keys = Object.keys(evidence.samples[0] || { time: "" });
    const cell = (v) => {
      const s = v === null || v === undefined ? "" : String(v);
      return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
    };
    return [keys.join(","), ...evidence.samples.map((s) => keys.map((k) => cell(s[k])).join(","))].join("\r\n");
  }

  // -- the figure -------------------------------------------------------------------------

  /** The timeline of ``evidence`` (the fleet's Evidence JSON) as a figure: summary,
   * zoom buttons, the SVG with hover and keyboard, readout, legend, table toggle, exports. */
  function draw(ctx, evidence) {
    const h = ctx.h;
    const n = ++figures;
    const ids = { title: `tl-title-${n}`, desc: `tl-desc-${n}`, hatch: `tl-hatch-${n}`, clip: `tl-clip-${n}`, readout: `tl-readout-${n}` };
    const m = model(evidence);
    const full = { a: 0, b: m.end };
    let view = { ...full };
    let cursor = null;
    const plotBox = h("div", {
      className: "tl-plot", tabindex: "0", role: "group", "aria-label": ctx.t("rec.keys"), "aria-describedby": ids.readout,
    });
    const readout = h("p", { className: "tl-readout", id: ids.readout, "aria-live": "polite" }, ctx.t("rec.hover_hint"));
    // Read out after a zoom (polite); the page's footer keeps saying whether it is live.
    const range = h("p", { className: "tl-range", "aria-live": "polite" });
    let drawn = null;

    const nearest = (ms) => {
      if (!m.samples.length) return 0;
      let best = 0;
      m.samples.forEach((s, i) => { if (Math.abs(s.ms - ms) < Math.abs(m.samples[best].ms - ms)) best = i; });
      return best;
    };
    const showCursor = (i) => {
      if (!m.samples.length) return;
      cursor = Math.max(0, Math.min(m.samples.length - 1, i));
      const s = m.samples[cursor];
      const xc = drawn.x(s.ms);
      drawn.cross.setAttribute("x1", xc.toFixed(1));
      drawn.cross.setAttribute("x2", xc.toFixed(1));
      drawn.cross.setAttribute("visibility", s.ms >= view.a && s.ms <= view.b ? "visible" : "hidden");
      ctx.put(readout, h("strong", { text: clock(ctx, m.start + s.ms, true) }), " ",
        sampleValues(ctx, s).map(([k, v]) => h("span", { className: "tl-value" }, ctx.t("rec.kv", { k, v }))));
      readout.dataset.sample = String(cursor);
    };
    const redraw = () => {
      drawn = drawSvg(ctx, m, view, ids);
      ctx.put(plotBox, drawn.root);
      const zoomed = view.a > full.a || view.b < full.b;
      ctx.put(range, ctx.t(zoomed ? "rec.range_zoomed" : "rec.range", {
        from: clock(ctx, m.start + view.a, true), to: clock(ctx, m.start + view.b, true),
        n: drawn.root.dataset.visible, total: m.samples.length,
      }));
      range.dataset.from = String(Math.round(view.a));
      range.dataset.to = String(Math.round(view.b));
      reset.disabled = !zoomed;
      wire();
      if (cursor !== null) showCursor(cursor);
    };
    const zoomTo = (a, b) => {
      const span = Math.max(b - a, m.step * 4);
      const mid = (a + b) / 2;
      a = Math.max(full.a, mid - span / 2);
      b = Math.min(full.b, a + span);
      view = { a, b };
      redraw();
    };
    const zoomBy = (factor) => {
      const centre = cursor !== null ? m.samples[cursor].ms : (view.a + view.b) / 2;
      const span = Math.min(full.b - full.a, (view.b - view.a) * factor);
      zoomTo(centre - span / 2, centre + span / 2);
    };
    const msAt = (event) => {
      const box = drawn.root.getBoundingClientRect();
      const xs = ((event.clientX - box.left) / box.width) * W;
      return view.a + ((Math.max(LEFT, Math.min(W - RIGHT, xs)) - LEFT) / PLOT_W) * (view.b - view.a);
    };
    // A drag over the plot selects a time range to zoom into; a move shows the values.
    const wire = () => {
      let from = null;
      drawn.hit.addEventListener("pointerdown", (e) => {
        from = msAt(e);
        showCursor(nearest(from)); // a tap on a touch screen, where nothing hovers
        drawn.hit.setPointerCapture?.(e.pointerId);
      });
      drawn.hit.addEventListener("pointermove", (e) => {
        const ms = msAt(e);
        showCursor(nearest(ms));
        if (from === null) return;
        const x0 = drawn.x(Math.min(from, ms)), x1 = drawn.x(Math.max(from, ms));
        drawn.select.setAttribute("x", x0.toFixed(1));
        drawn.select.setAttribute("width", (x1 - x0).toFixed(1));
        drawn.select.setAttribute("visibility", "visible");
      });
      drawn.hit.addEventListener("pointerup", (e) => {
        if (from === null) return;
        const to = msAt(e);
        const a = Math.min(from, to), b = Math.max(from, to);
        from = null;
        drawn.select.setAttribute("visibility", "hidden");
        if (drawn.x(b) - drawn.x(a) > 6) zoomTo(a, b);
      });
    };
    plotBox.addEventListener("keydown", (e) => {
      const i = cursor ?? nearest((view.a + view.b) / 2);
      const by = e.shiftKey ? 10 : 1;
      const keys = {
        ArrowRight: () => showCursor(i + by), ArrowLeft: () => showCursor(i - by),
        Home: () => showCursor(nearest(view.a)), End: () => showCursor(nearest(view.b)),
        "+": () => zoomBy(0.5), "=": () => zoomBy(0.5), "-": () => zoomBy(2), "0": () => zoomTo(full.a, full.b),
      };
      if (!keys[e.key]) return;
      e.preventDefault();
      keys[e.key]();
    });
    plotBox.addEventListener("focus", () => { if (cursor === null) showCursor(nearest((view.a + view.b) / 2)); });

    const button = (key, onclick, attrs) => h("button", { type: "button", onclick, ...(attrs || {}) }, ctx.t(key));
    const reset = button("rec.zoom_reset", () => zoomTo(full.a, full.b), { "data-zoom": "reset" });
    const tableBox = h("div", { hidden: true });
    const toggle = button("rec.table_show", () => {
      const open = tableBox.hidden;
      if (open && !tableBox.firstChild) ctx.put(tableBox, tableView(ctx, m));
      tableBox.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = ctx.t(open ? "rec.table_hide" : "rec.table_show");
    }, { "aria-expanded": "false", "data-toggle": "table" });
    const base = `${evidence.event_id || evidence.request_id || "evidence"}`;
    const csv = evidence.event_id
      ? h("a", { className: "button", href: `/api/events/${encodeURIComponent(evidence.event_id)}/evidence?format=csv`, download: `flight-recorder-${base}.csv`, "data-export": "csv" }, ctx.t("rec.csv"))
      : button("rec.csv", () => {
        const url = URL.createObjectURL(new Blob([csvOf(evidence)], { type: "text/csv" }));
        download(url, `flight-recorder-${base}.csv`);
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      }, { "data-export": "csv" });
    const png = button("rec.png", () => savePng(drawn.root, `flight-recorder-${base}.png`), { "data-export": "png" });
    const typeText = evidence.event_type ? ctx.label("event", evidence.event_type) : ctx.t("rec.on_demand");
    const facts = h("p", { className: "tl-facts" },
      h("strong", { text: typeText }), " · ",
      ctx.t("rec.window", { from: ctx.fmtTime(evidence.start), n: m.samples.length, s: (m.end / 1000).toFixed(1) }), " · ",
      ctx.t("rec.ended", { why: ctx.t(`rec.end_${evidence.end}`) }),
      evidence.truncated ? [" ", ctx.badge("stale", ctx.t("rec.truncated"))] : null,
      h("br"), h("small", { className: "tl-hash", text: ctx.t("rec.sha256", { hash: String(evidence.sha256 || "").slice(0, 16) }) }));
    const figure = h("figure", { className: "timeline", "data-event-id": evidence.event_id || "", "data-request-id": evidence.request_id || "" },
      facts,
      h("div", { className: "tl-tools" },
        button("rec.zoom_in", () => zoomBy(0.5), { "data-zoom": "in" }),
        button("rec.zoom_out", () => zoomBy(2), { "data-zoom": "out" }),
        reset, toggle, csv, png),
      range, plotBox, readout, legend(ctx),
      h("figcaption", { className: "tl-note", text: ctx.t("rec.how_to") }),
      tableBox);
    redraw();
    return figure;
  }

  /** An event's flight recorder into ``box``: drawn, or "no evidence recorded" on a 404. */
  async function showEvent(ctx, box, eventId) {
    ctx.put(box, ctx.message(ctx.t("rec.loading")));
    try {
      const evidence = await ctx.api(`/api/events/${encodeURIComponent(eventId)}/evidence`);
      ctx.put(box, draw(ctx, evidence));
    } catch (err) {
      if (err.status === 404) ctx.put(box, ctx.message(ctx.t("rec.none"), "none"));
      else ctx.put(box, ctx.message(ctx.t("common.error", { message: err.message }), "error"));
    }
    box.dataset.eventId = eventId;
  }

  /** The "what is this car doing?" button: asks the unit's agent for its last seconds
   * (POST /api/units/{unit_id}/evidence-requests), polls the request until it is answered
   * or expired, and draws the answer into ``box``. A 409 or 429 shows the fleet's reason. */
  function askButton(ctx, unitId, box) {
    const h = ctx.h;
    const seconds = h("input", { id: "rec-seconds", type: "number", min: "1", max: "600", value: "60", inputmode: "numeric" });
    const status = h("p", { className: "msg", role: "status", id: "rec-ask-status" });
    const ask = h("button", { type: "button", className: "primary", id: "rec-ask" }, ctx.t("rec.ask"));
    ask.addEventListener("click", async () => {
      ask.disabled = true;
      try {
        const sent = await ctx.api(`/api/units/${encodeURIComponent(unitId)}/evidence-requests`,
          { method: "POST", body: { seconds: Number(seconds.value) || 60 } });
        ctx.put(status, ctx.t("rec.asked"));
        for (;;) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
          if (!ask.isConnected) return; // the page moved on
          const answer = await ctx.api(`/api/evidence-requests/${encodeURIComponent(sent.request_id)}`);
          if (answer.status === "answered" && answer.evidence) {
            ctx.put(status, ctx.t("rec.answered", { time: ctx.fmtTime(answer.evidence.start) }));
            ctx.put(box, draw(ctx, answer.evidence));
            break;
          }
          if (answer.status === "expired" || (answer.status === "answered" && !answer.evidence)) {
            ctx.put(status, ctx.t("rec.expired"));
            break;
          }
        }
      } catch (err) {
        // 409: the car cannot be asked; 429: it is being asked already, or this user
        // has several requests waiting (the fleet's reason says which).
        ctx.put(status, err.status === 409 || err.status === 429
          ? ctx.t("rec.refused", { reason: err.message })
          : ctx.t("common.error", { message: err.message }));
      } finally {
        ask.disabled = false;
      }
    });
    return h("div", { className: "tl-ask" },
      h("div", { className: "filters" },
        h("div", {}, h("label", { for: "rec-seconds", text: ctx.t("rec.seconds") }), seconds),
        h("div", { className: "buttons" }, ask)),
      status);
  }

  /** The unit history's line for the flight recorder's entries, or null for any other:
   * "evidence" (a window stored, its hash chained) and "evidence_request" (who asked for
   * how many seconds). */
  function historyDetail(ctx, entry) {
    const d = entry.detail || {};
    if (entry.kind === "evidence") {
      return ctx.t("rec.hist_evidence", { n: d.samples ?? "—", why: ctx.t(`rec.end_${d.end}`), hash: String(d.sha256 || "").slice(0, 16) });
    }
    if (entry.kind === "evidence_request") return ctx.t("rec.hist_request", { by: d.by || "—", s: d.seconds ?? "—" });
    return null;
  }

  window.LW_TIMELINE = { draw, showEvent, askButton, historyDetail };
})();
