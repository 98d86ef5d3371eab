// The LiftWatch dashboard: one page, every view rendered from the JSON API under /api/,
// live updates from /api/live (server-sent events). No framework and no build step, so
// the fleet package ships it as is and it runs with no internet.
//
// What the server enforces, the page only mirrors: a contractor's requests are scoped
// server-side, and buttons a role may not use are hidden but would be refused anyway.
"use strict";
(() => {
  const I18N = window.LW_I18N;
  const main = document.getElementById("main");
  const state = {
    lang: localStorage.getItem("lw-lang") || "",
    site: { time_zone: "Asia/Shanghai", language: "zh" },
    user: null,
    csrf: "",
    source: null,
    sourceUnit: null,
    handlers: {},
    timers: [],
    wasDown: false,
  };

  // -- text ----------------------------------------------------------------------------

  function t(key, vars) {
    let text = I18N[state.lang]?.[key] ?? I18N.en[key] ?? key;
    for (const [name, value] of Object.entries(vars || {})) {
      text = text.replaceAll(`{${name}}`, String(value));
    }
    return text;
  }

  function label(prefix, value) {
    const key = `${prefix}.${value}`;
    return I18N[state.lang]?.[key] === undefined ? String(value ?? "—") : t(key);
  }

  function locale() {
    return state.lang === "zh" ? "zh-CN" : "en-GB";
  }

  // English dates as ISO (2026-12-07 04:07:10): en-GB's 07/12/2026 reads as July to an
  // American. The Swedish locale is the one Intl has that writes ISO dates.
  function fmtTime(iso) {
    if (!iso) return "—";
    return new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "sv-SE", {
      timeZone: state.site.time_zone,
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    }).format(new Date(iso));
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return t("age.d", { d, h });
    if (h) return t("age.h", { h, m });
    if (m) return t("age.m", { m, s: r });
    return t("age.s", { s: r });
  }

  function fmtNumber(value) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value === "number") return value.toLocaleString(locale());
    return String(value);
  }

  // -- DOM -----------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // replaceChildren, minus the holes: a null or false child (an optional part left out)
  // would otherwise show as the text "null".
  function put(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
  }

  function section(titleKey, id, ...children) {
    const headingId = `${id}-h`;
    return h("section", { className: "panel", id, "aria-labelledby": headingId },
      h("h2", { id: headingId, text: t(titleKey) }), ...children);
  }

  // A table with a caption-free header row; ``cells`` returns one row's cells. No rows:
  // the word "none", not an empty header. Each cell carries its column's name
  // (data-label), which a phone shows beside the value when the table becomes cards.
  function table(columns, rows, cells, attrs) {
    if (!rows.length) return message(t("common.none"));
    const names = columns.map((c) => t(c));
    // A group, not a region: a landmark would repeat its panel's heading (axe landmark-unique).
    return h("div", { className: "scroll", tabindex: "0", role: "group", "aria-label": attrs?.label || names.join(", ") },
      h("table", attrs?.table || {},
        h("thead", {}, h("tr", {}, names.map((name) => h("th", { scope: "col", text: name })))),
        h("tbody", {}, rows.map((row) => h("tr", attrs?.rowAttrs ? attrs.rowAttrs(row) : {},
          cells(row).map((c, i) => h("td", { "data-label": names[i] }, c)))))));
  }

  function badge(kind, text, extra) {
    return h("span", { className: `badge badge-${kind}`, ...(extra || {}) }, text);
  }

  function statusBadge(status) {
    return badge(status, label("status", status), { "data-status": status });
  }

  function unitLink(unitId) {
    return h("a", { href: `#/unit/${encodeURIComponent(unitId)}` }, unitId);
  }

  function message(text, kind) {
    return h("p", { className: `msg ${kind || ""}`, role: kind === "error" ? "alert" : null }, text);
  }

  // Action messages go beside the live-connection indicator, never over it; a new view
  // (or a language switch) clears them, so the footer never keeps a stale language.
  function announce(text) {
    document.getElementById("notice").textContent = text;
  }

  // What the flight recorder (timeline.js) draws with: this page's helpers and language.
  function recorder() {
    return { t, label, fmtTime, api, h, put, message, badge, announce, state, table };
  }

  // -- API -----------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, text) { super(text); this.status = status; }
  }

  async function api(path, options) {
    const method = options?.method || "GET";
    const headers = { Accept: "application/json" };
    if (options?.body !== undefined) headers["Content-Type"] = "application/json";
    if (options?.csv !== undefined) headers["Content-Type"] = "text/csv; charset=utf-8";
    if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
    const reply = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: options?.csv ?? (options?.body === undefined ? undefined : JSON.stringify(options.body)),
    });
    let body = null;
    try { body = await reply.json(); } catch { body = null; }
    if (reply.status === 401 && !options?.quiet401) {
      state.user = null;
      showLogin();
      throw new HttpError(401, body?.error || "not logged in");
    }
    if (!reply.ok) throw new HttpError(reply.status, body?.error || reply.statusText);
    return body;
  }

  // -- live updates --------------------------------------------------------------------

  function connectLive(unitId) {
    if (state.source && state.sourceUnit === unitId && state.source.readyState !== EventSource.CLOSED) return;
    if (state.source) state.source.close();
    const url = unitId ? `/api/live?unit=${encodeURIComponent(unitId)}` : "/api/live";
    const source = new EventSource(url);
    state.source = source;
    state.sourceUnit = unitId;
    source.onopen = () => {
      setLive(true);
      if (state.wasDown) {
        // Whatever happened while the stream was down is read again, not guessed.
        state.wasDown = false;
        state.handlers.refresh?.();
      }
    };
    source.onerror = () => {
      setLive(false);
      state.wasDown = true;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (logged out?) or went away for good: check and retry.
        setTimeout(async () => {
          if (state.source !== source) return;
          try { await api("/auth/me"); connectLive(unitId); } catch { /* the login form shows */ }
        }, 2000);
      }
    };
    for (const kind of ["car", "event", "alarms", "link", "counters"]) {
      source.addEventListener(kind, (e) => {
        try {
          const data = JSON.parse(e.data);
          state.handlers[kind]?.(data);
          // Whatever the view: the navigation's alarm count, and the opt-in notice.
          if (kind === "alarms" || kind === "event") refreshAlarmCount();
          if (kind === "event") window.LW_NOTIFY.onEvent(recorder(), data);
        } catch (err) { console.error(err); }
      });
    }
  }

  // The number of open alarms beside "Alarms" in the navigation: every alarm the reader
  // may see (the fleet scopes /api/alarms/count), whatever page is open. The live stream
  // says when to look again; a poll is the backstop for what it cannot carry (a
  // reconnect's gap, another instance's commits when no relay runs).
  const ALARM_COUNT_POLL_MS = 30000;
  const refreshAlarmCount = debounce(async () => {
    const link = document.querySelector("#nav a[href='#/alarms']");
    if (!state.user || !link) return;
    let n;
    try { n = (await api("/api/alarms/count")).open; } catch { return; }
    link.querySelector(".nav-count")?.remove();
    if (n) link.append(h("span", { className: "nav-count", id: "nav-alarm-count", "data-count": n, "aria-label": t("nav.open_alarms", { n }) }, fmtNumber(n)));
  }, 300);

  setInterval(refreshAlarmCount, ALARM_COUNT_POLL_MS);

  function setLive(up) {
    const node = document.getElementById("live");
    node.dataset.live = up ? "up" : "down";
    node.textContent = up ? t("live.connected") : t("live.reconnecting");
  }

  function debounce(fn, ms) {
    let timer = 0;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function every(ms, fn) {
    state.timers.push(setInterval(fn, ms));
  }

  // -- shell ---------------------------------------------------------------------------

  const NAV = [
    ["#/", "nav.overview"], ["#/units", "nav.units"], ["#/alarms", "nav.alarms"],
    ["#/firmware", "nav.firmware"], ["#/reports", "nav.reports"], ["#/plan", "nav.plan"],
    ["#/maintenance", "nav.maintenance"],
  ];

  function renderShell() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.getElementById("skip").textContent = t("skip");
    document.getElementById("brand").textContent = t("app.name");
    const lang = document.getElementById("lang");
    lang.textContent = t("lang.switch");
    lang.setAttribute("lang", state.lang === "zh" ? "en" : "zh-CN");
    lang.setAttribute("aria-label", t("lang.switch_label"));
    const nav = document.getElementById("nav");
    nav.setAttribute("aria-label", t("nav.label"));
    const logout = document.getElementById("logout");
    logout.textContent = t("logout");
    // The footer follows the language: the indicator re-worded, an old message dropped.
    const live = document.getElementById("live");
    if (live.dataset.live) live.textContent = t(live.dataset.live === "up" ? "live.connected" : "live.reconnecting");
    document.getElementById("notice").textContent = "";
    const who = document.getElementById("who");
    if (!state.user) {
      put(nav, );
      who.textContent = "";
      logout.hidden = true;
      return;
    }
    const here = location.hash || "#/";
    // Unpublished lists are for regulators and administrators (plan.js; the API says so too).
    const lists = ["regulator", "admin"].includes(state.user.role) ? [["#/publication", "nav.publication"]] : [];
    const items = state.user.can_admin ? [...NAV, ...lists, ["#/users", "nav.users"], ["#/northbound", "nav.northbound"], ["#/rollouts", "nav.rollouts"], ["#/configs", "nav.configs"]] : [...NAV, ...lists];
    put(nav, h("ul", {}, items.map(([href, key]) => {
      const current = href === "#/" ? here === "#/" || here === "#" : here.startsWith(href);
      return h("li", {}, h("a", { href, "aria-current": current ? "page" : null, text: t(key) }));
    })));
    refreshAlarmCount();
    const u = state.user;
    who.textContent = `${u.display_name} · ${t(`role.${u.role}`)}${u.contractor ? ` · ${u.contractor}` : ""}`;
    logout.hidden = !u.username;
  }

  async function render() {
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    state.handlers = {};
    renderShell();
    if (!state.user) return showLogin();
    const hash = location.hash || "#/";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const unitMatch = path.match(/^\/unit\/(.+)$/);
    put(main, message(t("common.loading")));
    try {
      if (unitMatch) await viewUnit(decodeURIComponent(unitMatch[1]), params);
      else if (path === "/units") await viewUnits(params);
      else if (path === "/alarms") await viewAlarms(params);
      else if (path === "/firmware") await viewFirmware();
      else if (path === "/reports") await viewReports(params);
      else if (path === "/users") await viewUsers();
      else if (path === "/plan") await window.LW_PLAN.viewPlan(recorder(), params);
      else if (path === "/publication") await window.LW_PLAN.viewPublication(recorder());
      else if (path === "/maintenance") await window.LW_MAINT.viewRecords(recorder(), params);
      else if (path === "/northbound") await window.LW_NORTH.viewNorthbound(recorder());
      else if (path === "/rollouts") await window.LW_ROLLOUTS.viewRollouts(recorder());
      else if (path === "/configs") await window.LW_CONFIGS.viewConfigs(recorder());
      else await viewOverview();
    } catch (err) {
      if (err.status === 401) return;
      put(main, message(err.status === 403 ? t("common.forbidden") : t("common.error", { message: err.message }), "error"));
    }
    if (!unitMatch) connectLive(null);
    const heading = main.querySelector("h1");
    document.title = heading ? `${heading.textContent} · LiftWatch` : "LiftWatch";
    // Keyboard and screen-reader users land on the new view, not on the old link.
    if (state.navigated) main.focus();
    state.navigated = true;
  }

  function showLogin() {
    if (state.source) { state.source.close(); state.source = null; }
    renderShell();
    const error = h("p", { className: "msg error", role: "alert", id: "login-error" });
    const form = h("form", { className: "login", id: "login-form", novalidate: true },
      h("h1", { text: t("login.title") }),
      h("p", { text: t("login.intro") }),
      h("label", { for: "username", text: t("login.username") }),
      h("input", { id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none" }),
      h("label", { for: "password", text: t("login.password") }),
      h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
      h("button", { type: "submit", className: "primary", text: t("login.submit") }),
      error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const body = await api("/auth/login", {
          method: "POST", quiet401: true,
          body: { username: form.username.value, password: form.password.value },
        });
        state.user = body.user;
        state.csrf = body.csrf;
        state.navigated = false;
        await render();
      } catch (err) {
        error.textContent = err.status === 401 ? t("login.failed") : t("common.error", { message: err.message });
      }
    });
    put(main, form);
    document.title = `${t("login.title")} · LiftWatch`;
    form.username.focus();
  }

  // -- overview ------------------------------------------------------------------------

  // An alarm's open-for timer: it ticks from onset while the alarm's event is raised and
  // stops at the event's clear (the API's age_s is then onset to clear, fixed).
  function ageCell(a) {
    const ticking = a.age_s !== null && !a.cleared;
    return h("span", { className: "age", "data-onset": a.onset || a.raised, "data-open": ticking ? "1" : "0" }, fmtAge(a.age_s));
  }

  // "cleared · passenger out HH:MM:SS" (site time) once the alarm's event cleared.
  function clearedNote(a) {
    if (!a.cleared) return null;
    const time = new Intl.DateTimeFormat(locale(), {
      timeZone: state.site.time_zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    }).format(new Date(a.cleared));
    return badge("online", t("alarms.cleared", { time }), { className: "badge badge-online cleared", "data-cleared": a.cleared });
  }

  // A building's name and address; kept a readable width (a squeezed column wrapped a
  // Chinese name one character a line).
  function buildingCell(a) {
    return h("span", { className: "building" }, a.building || "—", a.address ? h("br") : null, a.address ? h("small", {}, a.address) : null);
  }

  // Open alarms most urgent first: an entrapment whose passenger is not out yet, then any
  // other alarm still raised, then the ones that cleared; oldest first within each.
  function byUrgency(alarms) {
    const rank = (a) => (a.cleared ? 2 : a.type === "ENTRAPMENT" ? 0 : 1);
    return [...alarms].sort((a, b) => rank(a) - rank(b) || Date.parse(a.onset || a.raised) - Date.parse(b.onset || b.raised));
  }

  function alarmsTable(alarms, withActions) {
    const columns = ["col.type", "col.unit", "col.building", "col.floor", "col.state", "col.onset", "col.age"];
    if (withActions) columns.push("col.actions");
    return table(columns, alarms, (a) => {
      const row = [
        badge("alarm", label("event", a.type)),
        unitLink(a.unit_id),
        buildingCell(a),
        fmtNumber(a.floor),
        [label("astate", a.state), a.cleared ? " " : null, clearedNote(a), window.LW_CREW.note(recorder(), a)],
        fmtTime(a.onset || a.raised),
        ageCell(a),
      ];
      if (withActions) row.push(alarmActions(a));
      return row;
    }, { table: { className: "cards-sm" }, rowAttrs: (a) => ({ "data-alarm-id": a.alarm_id, "data-unit": a.unit_id, "data-state": a.state }) });
  }

  function tickAges() {
    for (const node of main.querySelectorAll(".age[data-open='1']")) {
      node.textContent = fmtAge((Date.now() - Date.parse(node.dataset.onset)) / 1000);
    }
  }

  const STATUSES = ["online", "stale", "offline", "blind", "never_seen"];

  function coverageCards(counts) {
    const cards = [["cov.registered", counts.registered, "registered"], ["cov.monitored", counts.monitored, "monitored"],
      ...STATUSES.map((s) => [`status.${s}`, counts[s], s])];
    return h("ul", { className: "cards" }, cards.map(([key, n, kind]) =>
      h("li", { className: `card card-${kind}` },
        h("a", { href: STATUSES.includes(kind) ? `#/units?status=${kind}` : "#/units" },
          h("span", { className: "num", "data-count": kind }, fmtNumber(n)), h("span", { className: "lbl" }, t(key))))));
  }

  function groupTable(groups, key, labelKey) {
    const sorted = [...groups].sort((a, b) => b.registered - a.registered).slice(0, 30);
    return table(["col.name", "cov.registered", "cov.monitored", "status.online", "status.offline", "status.never_seen"],
      sorted, (g) => [
        h("a", { href: `#/units?${key}=${encodeURIComponent(g.name)}` }, g.name || "—"),
        fmtNumber(g.registered), fmtNumber(g.monitored), fmtNumber(g.online), fmtNumber(g.offline), fmtNumber(g.never_seen),
      ], { label: t(labelKey) });
  }

  // When the history chains were last verified against a signed checkpoint (kept by
  // serve's schedule or `verify-history --checkpoint`): a regulator's evidence that no
  // chain was truncated, rewound or rewritten since. Filled in after the page shows.
  function historyCheckPanel() {
    const box = h("div", { id: "history-check" }, message(t("history.loading")));
    api("/api/history/checkpoint").then((data) => {
      const last = data.last_check;
      const schedule = data.scheduled
        ? t("history.scheduled", { minutes: Math.round(data.interval_s / 60) })
        : t("history.not_scheduled");
      if (!last) {
        put(box, message(`${t("history.never")} ${schedule}`));
        return;
      }
      const verdict = last.intact
        ? badge("online", t("history.intact"))
        : badge("offline", t("history.problems", { count: last.problems }));
      put(box,
        h("p", {}, verdict, " ", t("history.checked", {
          time: fmtTime(last.checked),
          written: last.checkpoint_written ? fmtTime(last.checkpoint_written) : "—",
          units: last.units,
          source: t(`history.source.${last.source}`),
        })),
        last.intact ? null : h("pre", { className: "history-problems", text: last.summary }),
        h("p", { className: "msg" }, schedule));
    }).catch((err) => put(box, message(`${t("history.unavailable")} ${err.message}`, "error")));
    return section("history.title", "history-panel", box);
  }

  async function viewOverview() {
    const [alarms, byStreet, byContractor] = await Promise.all([
      api("/api/alarms?open=true"), api("/api/coverage?by=street"), api("/api/coverage?by=contractor"),
    ]);
    const alarmBox = h("div", { id: "open-alarms" });
    const fillAlarms = (list) => {
      put(alarmBox, list.length
        ? alarmsTable(byUrgency(list), false)
        : message(t("overview.no_alarms")));
    };
    fillAlarms(alarms.alarms);
    const cards = h("div", { id: "coverage-cards" }, coverageCards(byStreet));
    put(main, 
      h("h1", { text: t("overview.title") }),
      section("overview.open_alarms", "alarms-panel", alarmBox, h("p", {}, h("a", { href: "#/alarms", text: t("overview.goto_alarms") })),
        state.user.can_act ? window.LW_NOTIFY.optIn(recorder()) : null),
      section("overview.coverage", "coverage-panel", cards),
      h("div", { className: "two" },
        section("overview.by_street", "street-panel", groupTable(byStreet.groups || [], "street", "overview.by_street")),
        section("overview.by_contractor", "contractor-panel", groupTable(byContractor.groups || [], "contractor", "overview.by_contractor"))),
    );
    if (state.user.role !== "contractor") main.append(historyCheckPanel());
    const refreshAlarms = debounce(async () => fillAlarms((await api("/api/alarms?open=true")).alarms), 100);
    const refreshAll = async () => {
      refreshAlarms();
      put(cards, coverageCards(await api("/api/coverage")));
    };
    state.handlers = { event: refreshAlarms, alarms: refreshAlarms, refresh: refreshAll };
    every(1000, tickAges);
    every(60000, refreshAll);
  }

  // -- units ---------------------------------------------------------------------------

  function unitsQuery(params) {
    const query = new URLSearchParams();
    for (const key of ["q", "status", "street", "contractor", "model", "order"]) {
      if (params.get(key)) query.set(key, params.get(key));
    }
    return query;
  }

  async function viewUnits(params) {
    const query = unitsQuery(params);
    // What matters first unless the reader asks for the unit-id order: units with an open
    // alarm, then link down and offline, then online, then never seen (the API's urgency).
    if (!query.get("order")) query.set("order", "urgency");
    const page = new URLSearchParams(query);
    page.set("page_size", "50");
    if (params.get("page")) page.set("page_token", params.get("page"));
    const scoped = state.user.role === "contractor";
    const [data, streets, contractors, firmware] = await Promise.all([
      api(`/api/units?${page}`), api("/api/coverage?by=street"),
      scoped ? null : api("/api/coverage?by=contractor"), api("/api/firmware"),
    ]);
    const field = (name, key, attrs) => [
      h("label", { for: `f-${name}`, text: t(key) }),
      h("input", { id: `f-${name}`, name, value: params.get(name) || "", ...(attrs || {}) }),
    ];
    // A filter of known values: a select, each value with its number of units.
    const choice = (name, key, counts) => [
      h("label", { for: `f-${name}`, text: t(key) }),
      h("select", { id: `f-${name}`, name },
        h("option", { value: "", text: t("units.any") }),
        counts.filter(([value]) => value).map(([value, n]) =>
          h("option", { value, selected: params.get(name) === value, text: t("units.option", { value, n: fmtNumber(n) }) }))),
    ];
    const groupCounts = (data) => (data?.groups || []).map((g) => [g.name, g.registered]).sort((a, b) => a[0].localeCompare(b[0], locale()));
    const models = new Map();
    for (const c of firmware.firmware) models.set(c.model, (models.get(c.model) || 0) + c.units);
    const status = h("select", { id: "f-status", name: "status" },
      h("option", { value: "", text: t("units.any") }),
      STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s, text: label("status", s) })));
    const order = h("select", { id: "f-order", name: "order" },
      ["urgency", "unit"].map((o) => h("option", { value: o, selected: query.get("order") === o, text: t(`units.order.${o}`) })));
    const form = h("form", { className: "filters", role: "search", "aria-label": t("units.filters") },
      h("div", {}, field("q", "units.search", { type: "search" })),
      h("div", {}, h("label", { for: "f-status", text: t("col.status") }), status),
      h("div", {}, choice("street", "col.street", groupCounts(streets))),
      scoped ? null : h("div", {}, choice("contractor", "col.contractor", groupCounts(contractors))),
      h("div", {}, choice("model", "col.model", [...models].sort((a, b) => a[0].localeCompare(b[0])))),
      h("div", {}, h("label", { for: "f-order", text: t("units.order") }), order),
      h("div", { className: "buttons" },
        h("button", { type: "submit", className: "primary", text: t("units.apply") }),
        h("a", { href: "#/units", className: "button", text: t("units.reset") })));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) next.set(k, String(v));
      location.hash = `#/units?${next}`;
    });
    const csv = new URLSearchParams(query);
    csv.set("format", "csv");
    const pager = h("p", { className: "pager" },
      params.get("page") ? h("a", { href: `#/units?${query}`, className: "button", text: t("units.first") }) : null,
      data.next_page_token ? h("a", {
        href: `#/units?${new URLSearchParams([...query, ["page", data.next_page_token]])}`,
        className: "button", text: t("units.next"),
      }) : null);
    put(main, 
      h("h1", { text: t("units.title") }),
      form,
      h("p", { className: "summary" },
        h("span", { id: "units-total", text: t("units.total", { n: fmtNumber(data.total) }) }), " · ",
        h("a", { href: `/api/units?${csv}`, download: "units.csv", text: t("units.export") })),
      data.units.length ? table(
        ["col.unit", "col.status", "col.building", "col.street", "col.contractor", "col.model", "col.firmware", "col.last_seen"],
        data.units, (u) => [unitLink(u.unit_id), statusBadge(u.status), u.building || "—", u.street || "—",
          u.contractor || "—", u.model || "—", u.firmware || "—", fmtTime(u.last_seen)],
        { table: { id: "units-table" } },
      ) : message(t("units.none")),
      pager,
    );
    state.handlers = { refresh: () => render() };
  }

  // -- one unit ------------------------------------------------------------------------

  function carPanel(car) {
    if (!car) return message(t("unit.no_car"));
    const item = (key, value, id) => h("div", { className: "kv" }, h("dt", { text: t(key) }), h("dd", { id }, value));
    const arrow = { UP: "▲ ", DOWN: "▼ " }[car.direction] || "";
    return h("dl", { className: "car", id: "car" },
      item("unit.floor", fmtNumber(car.floor), "car-floor"),
      item("unit.direction", `${arrow}${label("dir", car.direction)}`, "car-direction"),
      item("unit.door", label("door", car.door), "car-door"),
      item("unit.mode", label("mode", car.mode), "car-mode"),
      item("unit.moving", car.moving === null ? "—" : t(car.moving ? "common.yes" : "common.no"), "car-moving"),
      item("unit.occupied", car.occupied === null ? "—" : t(car.occupied ? "common.yes" : "common.no"), "car-occupied"),
      item("unit.load", car.load_percent === null ? "—" : `${car.load_percent} %`, "car-load"),
      item("unit.updated", fmtTime(car.time), "car-time"));
  }

  function linkPanel(link) {
    if (!link) return message(t("unit.no_link"));
    const rows = [["unit.requests", link.requests], ["unit.responses", link.responses], ["unit.timeouts", link.timeouts],
      ["unit.crc_errors", link.crc_errors], ["unit.exceptions", link.exception_responses],
      ["unit.implausible", link.implausible_values], ["unit.latency", t("unit.ms", { n: link.latency_ms_p50 })]];
    return h("div", { id: "link" },
      h("p", {}, badge(link.up ? "online" : "offline", t(link.up ? "unit.link_up" : "unit.link_down")), " ", fmtTime(link.time)),
      h("dl", { className: "grid" }, rows.map(([k, v]) => h("div", { className: "kv" }, h("dt", { text: t(k) }), h("dd", {}, fmtNumber(v))))));
  }

  function trendChart(series) {
    const points = series.filter((c) => c.door_open_median_ms !== null || c.door_close_median_ms !== null);
    if (points.length === 0) return message(t("unit.chart_empty"));
    const W = 640, H = 220, P = 40;
    const times = points.map((c) => Date.parse(c.time));
    const values = points.flatMap((c) => [c.door_open_median_ms, c.door_close_median_ms]).filter((v) => v !== null);
    const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
    const v0 = 0, v1 = Math.max(...values, 1) * 1.15;
    const x = (tm) => P + ((tm - t0) / (t1 - t0)) * (W - 2 * P);
    const y = (v) => H - P - ((v - v0) / (v1 - v0)) * (H - 2 * P);
    const ns = "http://www.w3.org/2000/svg";
    const svg = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc", class: "chart", id: "door-chart" });
    root.append(svg("title", { id: "chart-title" }, t("unit.chart_title")), svg("desc", { id: "chart-desc" }, t("unit.chart_desc")));
    root.append(svg("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }), svg("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }));
    for (const frac of [0, 0.5, 1]) {
      const v = v0 + frac * (v1 - v0);
      root.append(svg("text", { x: P - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, Math.round(v)));
    }
    root.append(svg("text", { x: P, y: H - P + 16, class: "tick" }, fmtTime(points[0].time)));
    root.append(svg("text", { x: W - P, y: H - P + 16, class: "tick", "text-anchor": "end" }, fmtTime(points.at(-1).time)));
    const line = (key, cls) => {
      const pts = points.filter((c) => c[key] !== null).map((c) => `${x(Date.parse(c.time)).toFixed(1)},${y(c[key]).toFixed(1)}`);
      if (pts.length) root.append(svg("polyline", { points: pts.join(" "), class: cls, "data-series": key, "data-points": pts.length }));
    };
    line("door_open_median_ms", "series-open");
    line("door_close_median_ms", "series-close");
    const legend = h("p", { className: "legend" },
      h("span", { className: "key key-open" }), t("unit.door_open_median"), " ",
      h("span", { className: "key key-close" }), t("unit.door_close_median"));
    return h("figure", { className: "chart-box" }, root, h("figcaption", {}, legend));
  }

  function healthPanel(series) {
    const last = series.at(-1);
    if (!last) return message(t("unit.chart_empty"));
    const ms = (v) => (v === null ? "—" : t("unit.ms", { n: v }));
    const trend = (v) => (v === null ? "—" : `×${v.toFixed(2)}`);
    const rows = [["unit.trips", fmtNumber(last.trips)], ["unit.door_cycles", fmtNumber(last.door_cycles)],
      ["unit.run_hours", fmtNumber(last.run_hours)], ["unit.door_open_median", ms(last.door_open_median_ms)],
      ["unit.door_close_median", ms(last.door_close_median_ms)], ["unit.door_open_trend", trend(last.door_open_trend)],
      ["unit.door_close_trend", trend(last.door_close_trend)]];
    return h("div", { id: "health" },
      h("dl", { className: "grid" }, rows.map(([k, v]) => h("div", { className: "kv" }, h("dt", { text: t(k) }), h("dd", {}, v)))),
      trendChart(series));
  }

  // An event's regional platform codes ("重庆 93"); "—" where none.
  function platformCodes(codes) {
    const entries = Object.entries(codes || {});
    return entries.length ? entries.map(([p, c]) => `${label("platform", p)} ${c}`).join(", ") : "—";
  }

  // An event's reason in the reader's language: its code's sentence with the code's
  // parameters (an enum value put in words), else the agent's English text (an older
  // agent sends no code; a code newer than this page has no sentence here).
  const REASON_PARAM_LABELS = { door: "door", mode: "mode", direction: "dir", type: "event" };
  function reasonText(e) {
    const key = `reason.${e.reason_code}`;
    if (!e.reason_code || I18N[state.lang]?.[key] === undefined) return e.reason || "—";
    const params = {};
    for (const [name, value] of Object.entries(e.reason_params || {})) {
      params[name] = REASON_PARAM_LABELS[name] ? label(REASON_PARAM_LABELS[name], value) : value;
    }
    return t(key, params);
  }

  // ``onRecorder(event_id)`` shows an event's flight recorder (a button per row).
  function eventRows(events, labelKey, onRecorder) {
    return table(["col.time", "col.type", "col.class", "col.gb_code", "col.platform_codes", "col.phase", "col.floor", "col.reason", "rec.title"], events, (e) => [
      fmtTime(e.time), label("event", e.type),
      e.class ? h("span", { className: "event-class", "data-class": e.class, text: label("class", e.class) }) : "—",
      h("span", { className: "gb-code", text: e.gb_code ?? "—" }), platformCodes(e.platform_codes),
      label("phase", e.phase), fmtNumber(e.floor), reasonText(e),
      e.event_id ? h("button", { type: "button", "data-recorder": e.event_id, "aria-label": t("rec.open_named", { type: label("event", e.type) }),
        onclick: () => onRecorder(e.event_id) }, t("rec.open")) : "—",
    ], { label: t(labelKey) });
  }

  function openEvents(events) {
    const open = new Map();
    for (const e of events) {
      if (e.phase === "RAISED") open.set(e.event_id, e);
      else if (e.phase === "CLEARED") open.delete(e.event_id);
    }
    return [...open.values()];
  }

  // ``events`` (the unit's events by "event_id phase") gives an event entry's reason in the
  // reader's language; an event older than the page's list keeps the recorded text.
  function historyDetail(entry, events) {
    const d = entry.detail;
    if (d === null || typeof d !== "object") return String(d ?? "");
    const recorded = window.LW_TIMELINE.historyDetail(recorder(), entry);
    if (recorded !== null) return recorded;
    const at = (us) => (us === null || us === undefined ? "—" : fmtTime(new Date(us / 1000).toISOString()));
    if (entry.kind === "maintenance_record") {
      return t("hist.maintenance_record_line", { kind: label("mnt.kind", d.kind), start: at(d.start_us), end: at(d.end_us),
        contractor: d.contractor || "—", by: d.uploaded_by || "—" });
    }
    if (entry.kind === "visit") {
      return t("hist.visit_line", { id: d.visit_id, start: at(d.start_us), end: at(d.end_us),
        min: Math.round((d.duration_s || 0) / 60), mode: label("mnt.mode", d.mode) });
    }
    if (entry.kind === "maintenance_verdict") {
      // The verdict's reason is the fleet's English text: shown to an English reader;
      // the maintenance page explains the verdict in either language.
      const verdict = t("hist.verdict_line", { id: d.record_id, verdict: label("mnt.verdict", d.verdict) });
      return state.lang === "en" && d.reason ? `${verdict} · ${d.reason}` : verdict;
    }
    const parts = [];
    if (d.type) parts.push(label("event", d.type));
    if (d.phase) parts.push(label("phase", d.phase));
    if (d.step) parts.push(label("step", d.step));
    if (d.by) parts.push(d.by === "event" ? t("alarms.by_event") : d.by);
    if (d.step === "crew_dispatched" && d.crew) parts.push(window.LW_CREW.line(recorder(), { crew: d.crew, crew_eta: d.eta }));
    if (d.old_status || d.new_status) parts.push(`${label("status", d.old_status)} → ${label("status", d.new_status)}`);
    if (entry.kind === "firmware") {
      if (d.new_firmware !== d.old_firmware) parts.push(`${d.model || ""} ${d.old_firmware || "—"} → ${d.new_firmware || "—"}`);
      if (d.new_agent_version !== d.old_agent_version) parts.push(`${t("col.agent")} ${d.old_agent_version || "—"} → ${d.new_agent_version || "—"}`);
    }
    if (entry.kind === "register") parts.push(d.new ? `${d.building || ""} ${d.contractor || ""}` : (d.changed || []).join(", "));
    const event = entry.kind === "event" ? events?.get(`${d.event_id} ${d.phase}`) : null;
    if (d.reason) parts.push(event ? reasonText(event) : d.reason);
    return parts.length ? parts.join(" · ") : JSON.stringify(d);
  }

  async function viewUnit(unitId, params) {
    const id = encodeURIComponent(unitId);
    let unit;
    try {
      unit = await api(`/api/units/${id}`);
    } catch (err) {
      if (err.status === 404) {
        put(main, h("h1", { text: unitId }), message(t("unit.not_found", { id: unitId }), "error"));
        connectLive(null);
        return;
      }
      throw err;
    }
    const [live, events, alarms, firmware, history] = await Promise.all([
      api(`/api/units/${id}/live`), api(`/api/events?unit=${id}&limit=100`),
      api(`/api/alarms?open=true&unit=${id}`), api(`/api/firmware?history=${id}`),
      api(`/api/units/${id}/history`),
    ]);
    const statusBox = h("span", { id: "unit-status" });
    const banner = h("div", { id: "alarm-banner" });
    const setAlarms = (alarmsOpen) => {
      // An open alarm whose event cleared (the passenger is out) no longer puts the unit
      // in alarm: it says when it cleared until the desk closes it.
      const open = alarmsOpen.filter((a) => !a.cleared);
      const cleared = alarmsOpen.filter((a) => a.cleared);
      put(statusBox, open.length ? badge("alarm", t("status.alarm"), { "data-status": "alarm" }) : statusBadge(unit.status));
      put(banner, open.length
        ? h("p", { className: "banner", role: "alert" },
          t("unit.alarm_banner", { types: [...new Set(open.map((a) => label("event", a.type)))].join("、") }), " ",
          h("a", { href: "#/alarms", text: t("overview.goto_alarms") }))
        : "",
      cleared.map((a) => h("p", { className: "alarm-cleared", "data-alarm-id": a.alarm_id },
        `${label("event", a.type)} `, clearedNote(a), " ", h("a", { href: "#/alarms", text: t("overview.goto_alarms") }))));
    };
    let eventList = events.events.slice().reverse();
    const eventsById = new Map(eventList.map((e) => [`${e.event_id} ${e.phase}`, e]));
    const carBox = h("div", {}, carPanel(live.car));
    const linkBox = h("div", {}, linkPanel(live.link));
    let series = live.counters;
    const healthBox = h("div", {}, healthPanel(series));
    const openBox = h("div", { id: "open-events" });
    const pastBox = h("div", { id: "past-events" });
    // The flight recorder: an event's evidence (its button in the lists, or ?evidence=ID
    // from the claims audit), or the car's last seconds on demand.
    const recBox = h("div", { id: "recorder" }, message(t("rec.pick")));
    const showRecorder = (eventId) => {
      window.LW_TIMELINE.showEvent(recorder(), recBox, eventId);
      recBox.scrollIntoView?.({ block: "nearest" });
    };
    const fillEvents = () => {
      const open = openEvents(eventList.slice().reverse());
      put(openBox, open.length ? eventRows(open, "unit.open_events", showRecorder) : message(t("common.none")));
      put(pastBox, eventList.length ? eventRows(eventList.slice(0, 50), "unit.past_events", showRecorder) : message(t("unit.no_events")));
    };
    fillEvents();
    setAlarms(alarms.alarms);
    const meta = [["col.address", unit.address], ["col.street", unit.street], ["col.contractor", unit.contractor],
      ["col.model", unit.model], ["col.firmware", unit.firmware], ["col.agent", unit.agent_id ? `${unit.agent_id} ${unit.agent_version}` : ""],
      ["col.last_seen", fmtTime(unit.last_seen)]];
    const chain = history.intact
      ? badge("online", t("unit.chain_ok", { n: history.entries.length }), { id: "chain", "data-intact": "true" })
      : badge("alarm", t("unit.chain_broken", { n: history.problems.length }), { id: "chain", "data-intact": "false" });
    put(main, 
      h("h1", {}, `${unitId} `, h("small", {}, unit.building || "")),
      h("p", {}, statusBox),
      banner,
      h("dl", { className: "grid meta" }, meta.map(([k, v]) => h("div", { className: "kv" }, h("dt", { text: t(k) }), h("dd", {}, v || "—")))),
      h("div", { className: "two" },
        section("unit.car", "car-panel", carBox),
        section("unit.link", "link-panel", linkBox)),
      section("unit.open_events", "open-panel", openBox),
      section("unit.past_events", "events-panel", pastBox),
      section("rec.title", "recorder-panel", state.user.can_act
        ? [h("p", { text: t("rec.ask_intro") }), window.LW_TIMELINE.askButton(recorder(), unitId, recBox)] : null, recBox),
      section("mnt.visits", "visits-panel", window.LW_MAINT.unitVisits(recorder(), unitId)),
      section("unit.health", "health-panel", healthBox),
      // Only real changes: an entry where neither the firmware nor the agent changed (a
      // reconnect's report) would read "0.1.0 → 0.1.0".
      section("unit.firmware_history", "firmware-panel", table(["col.at", "col.old", "col.new", "col.agent"],
        firmware.history.filter((c) => c.old_firmware !== c.new_firmware || c.old_agent_version !== c.new_agent_version).reverse(), (c) => [
          fmtTime(c.at), c.old_firmware || "—", c.new_firmware || "—",
          c.old_agent_version === c.new_agent_version ? c.new_agent_version || "—" : `${c.old_agent_version || "—"} → ${c.new_agent_version || "—"}`])),
      section("unit.history", "history-panel", h("p", {}, chain),
        table(["col.at", "col.kind", "col.detail"], history.entries.slice().reverse().slice(0, 100), (e) => [
          fmtTime(e.at), label("hist", e.kind), historyDetail(e, eventsById)])),
    );
    const refreshAlarms = debounce(async () => setAlarms((await api(`/api/alarms?open=true&unit=${id}`)).alarms), 100);
    state.handlers = {
      car: (car) => { if (car.unit_id === unitId) put(carBox, carPanel(car)); },
      link: (link) => { if (link.unit_id === unitId) put(linkBox, linkPanel(link)); },
      counters: (c) => {
        if (c.unit_id !== unitId) return;
        series = [...series, c].slice(-500);
        put(healthBox, healthPanel(series));
      },
      event: (e) => {
        if (e.unit_id !== unitId) return;
        eventList = [e, ...eventList];
        fillEvents();
        announce(`${label("event", e.type)} · ${label("phase", e.phase)}`);
      },
      alarms: (a) => { if (a.unit_id === unitId) refreshAlarms(); },
      refresh: () => render(),
    };
    connectLive(unitId);
    if (params?.get("evidence")) showRecorder(params.get("evidence"));
  }

  // -- alarms --------------------------------------------------------------------------

  const ACTIONS = [
    ["ack", ["raised", "dispatched"]],
    ["on-site", ["acknowledged"]],
    ["resolve", ["acknowledged", "on_site"]],
    ["false-alarm", ["raised", "dispatched", "acknowledged", "on_site"]],
  ];

  const CLOSING = ["resolve", "false-alarm"];

  function alarmActions(alarm) {
    if (!state.user.can_act) return "—";
    const allowed = ACTIONS.filter(([, states]) => states.includes(alarm.state)).map(([action]) => action);
    // Every step takes an optional note, kept in the unit's history with the step. While
    // the alarm's event is still raised (the passenger may still be inside) closing it
    // takes one: the fleet refuses it without and keeps the reason as the close reason.
    const needsReason = !alarm.cleared && allowed.some((a) => CLOSING.includes(a));
    const noteLabel = t(needsReason ? "alarms.reason_label" : "alarms.note_label");
    const note = allowed.length
      ? h("input", { type: "text", className: needsReason ? "reason note-input" : "note note-input", name: "note", maxlength: 1000,
        "aria-label": noteLabel, placeholder: noteLabel })
      : null;
    const error = h("span", { className: "msg error", role: "alert" });
    const buttons = allowed.map((action) =>
      h("button", {
        type: "button", className: action === "false-alarm" ? "" : "primary", "data-action": action,
        onclick: async (e) => {
          // Closing cannot be undone: the dispatcher confirms, naming the unit.
          if (CLOSING.includes(action) && !window.confirm(t(`confirm.${action}`, { id: alarm.alarm_id, unit: alarm.unit_id }))) return;
          e.target.disabled = true;
          const body = note && note.value.trim() ? { reason: note.value.trim() } : {};
          try {
            await api(`/api/alarms/${alarm.alarm_id}/${action}`, { method: "POST", body });
            announce(t(`done.${action}`, { id: alarm.alarm_id }));
          } catch (err) {
            if (err.status === 400 && needsReason && !note.value.trim()) {
              // Kept on the page (no refresh): the dispatcher types the reason here.
              error.textContent = t("alarms.reason_needed", { id: alarm.alarm_id });
              e.target.disabled = false;
              note.focus();
              return;
            }
            announce(t("alarms.failed", { id: alarm.alarm_id, message: err.message }));
          }
          state.handlers.alarms?.();
          refreshAlarmCount();
        },
      }, t(`action.${action}`)));
    // An acknowledged alarm: who was sent and when they are expected (crew.js).
    const crew = alarm.state === "acknowledged"
      ? window.LW_CREW.form(recorder(), alarm, note, error, () => { state.handlers.alarms?.(); refreshAlarmCount(); })
      : null;
    return buttons.length ? h("div", { className: "actions" }, note, buttons, crew, error) : "—";
  }

  // The notes taken with each step, read from the unit's history when the lifecycle opens.
  async function lifecycleNotes(alarm, list) {
    const history = await api(`/api/units/${encodeURIComponent(alarm.unit_id)}/history`);
    const notes = history.entries.filter((e) => e.kind === "alarm" && e.detail?.alarm_id === alarm.alarm_id && e.detail?.reason);
    for (const e of notes) {
      list.append(h("li", { className: "note", "data-step": e.detail.step },
        `${fmtTime(e.at)} — ${t("alarms.note", { step: label("step", e.detail.step), by: e.detail.by || "—", note: e.detail.reason })}`));
    }
  }

  function lifecycle(alarm) {
    const steps = [["onset", alarm.onset], ["raised", alarm.raised], ["dispatched", alarm.dispatched],
      ["escalated", alarm.escalated], ["acknowledged", alarm.acknowledged, alarm.acknowledged_by],
      ["crew_dispatched", alarm.crew_dispatched, alarm.crew_dispatched_by],
      ["on_site", alarm.on_site, alarm.on_site_by], ["cleared", alarm.cleared],
      ["closed", alarm.closed, alarm.closed_by, alarm.close_reason]]
      .filter(([, at]) => at).sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
    const notes = h("ul", { className: "notes" });
    const box = h("details", { className: "lifecycle" },
      h("summary", { text: `${t("alarms.lifecycle")} (${steps.length})` }),
      h("ol", {}, steps.map(([step, at, by, why]) => h("li", { "data-step": step },
        `${fmtTime(at)} — ${step === "crew_dispatched" ? window.LW_CREW.line(recorder(), alarm) : t(`step.${step}`)}${by ? ` · ${by === "event" ? t("alarms.by_event") : by}` : ""}${why ? ` · ${t("alarms.closed_while_raised", { reason: why })}` : ""}`))),
      notes,
      h("p", {}, h("a", { href: `#/alarms?${recorderQuery(alarm.event_id)}`, "data-recorder": alarm.event_id }, t("rec.open"))));
    box.addEventListener("toggle", () => {
      if (box.open && !box.dataset.notes) {
        box.dataset.notes = "1";
        lifecycleNotes(alarm, notes).catch(() => { /* the steps above still show */ });
      }
    });
    return box;
  }

  // This alarms view's query with ?evidence=ID: the page shows that event's flight recorder.
  function recorderQuery(eventId) {
    const query = new URLSearchParams((location.hash.split("?")[1]) || "");
    query.set("evidence", eventId);
    return query;
  }

  async function viewAlarms(params) {
    const openOnly = params.get("all") !== "1";
    const box = h("div", { id: "alarms-list" });
    const fill = async () => {
      const data = await api(`/api/alarms?open=${openOnly}&limit=200`);
      put(box, data.alarms.length
        ? table(["col.type", "col.unit", "col.building", "col.floor", "col.state", "col.onset", "col.age", "col.actions", "alarms.lifecycle"],
          openOnly ? byUrgency(data.alarms) : data.alarms, (a) => [
            badge("alarm", label("event", a.type)), unitLink(a.unit_id),
            buildingCell(a),
            fmtNumber(a.floor), [h("span", { className: "state", text: label("astate", a.state) }), a.cleared ? " " : null, clearedNote(a), window.LW_CREW.note(recorder(), a)],
            fmtTime(a.onset || a.raised),
            ageCell(a),
            alarmActions(a), lifecycle(a),
          ], { table: { className: "cards-sm" }, rowAttrs: (a) => ({ "data-alarm-id": a.alarm_id, "data-unit": a.unit_id, "data-state": a.state }) })
        : message(t("alarms.none")));
    };
    const toggle = h("input", { type: "checkbox", id: "open-only", checked: openOnly });
    toggle.addEventListener("change", () => { location.hash = toggle.checked ? "#/alarms" : "#/alarms?all=1"; });
    put(main, 
      h("h1", { text: t("alarms.title") }),
      h("p", { className: "check" }, toggle, h("label", { for: "open-only", text: t("alarms.open_only") })),
      state.user.can_act ? window.LW_NOTIFY.optIn(recorder()) : message(t("alarms.read_only")),
      box,
      params.get("evidence") ? section("rec.title", "recorder-panel", h("div", { id: "recorder" })) : null);
    if (params.get("evidence")) window.LW_TIMELINE.showEvent(recorder(), main.querySelector("#recorder"), params.get("evidence"));
    await fill();
    const refresh = debounce(fill, 100);
    state.handlers = { alarms: refresh, event: refresh, refresh };
    every(1000, tickAges);
  }

  // -- firmware ------------------------------------------------------------------------

  function barFill(percent) {
    // Through the CSSOM: the Content-Security-Policy forbids inline style attributes.
    const node = h("span", { className: "bar", "aria-hidden": "true" });
    node.style.setProperty("--w", `${percent}%`);
    return node;
  }

  function bars(rows, valueKey, labelOf) {
    const max = Math.max(1, ...rows.map((r) => Number(r[valueKey]) || 0));
    return h("ul", { className: "bars" }, rows.map((r) => h("li", {},
      h("span", { className: "bar-label" }, labelOf(r)),
      barFill(((Number(r[valueKey]) || 0) / max) * 100),
      h("span", { className: "bar-value" }, fmtNumber(r[valueKey])))));
  }

  async function viewFirmware() {
    const data = await api("/api/firmware");
    put(main, 
      h("h1", { text: t("firmware.title") }),
      section("firmware.controllers", "fw-panel",
        table(["col.model", "col.firmware", "col.units"], data.firmware, (c) => [c.model || "—", c.version || "—", fmtNumber(c.units)], { table: { id: "fw-table" }, label: t("firmware.controllers") }),
        bars(data.firmware.slice(0, 20), "units", (c) => `${c.model || "—"} ${c.version || ""}`)),
      section("firmware.agents", "agent-panel",
        table(["col.model", "col.agent_version", "col.units"], data.agent_versions, (c) => [c.model || "—", c.version || "—", fmtNumber(c.units)], { label: t("firmware.agents") })),
      section("firmware.violations", "violations-panel", data.violations.length
        ? table(["col.unit", "col.model", "col.firmware", "col.rule", "col.reason"], data.violations,
          (v) => [unitLink(v.unit_id), v.model, v.firmware, v.rule, v.reason], { table: { id: "violations-table" } })
        : message(t("firmware.no_violations"))),
    );
  }

  // -- reports -------------------------------------------------------------------------

  const REPORT_COLUMNS = {
    "fault-rate": ["name", "units", "faults", "trips", "watched_days", "exposure", "faults_per_1000_trips", "faults_per_month", "faults_per_unit_month"],
    "service-life": ["unit_id", "install_date", "age_years", "flag", "model", "building", "contractor", "faults", "faults_per_1000_trips"],
    scorecard: ["contractor", "units", "coverage_pct", "faults", "faults_per_1000_trips", "alarms", "false_alarms",
      "mean_ack_s", "mean_resolve_s", "entrapments", "mean_rescue_s", "max_rescue_s", "closed_while_raised"],
  };
  const REPORT_METRIC = { "fault-rate": "faults_per_1000_trips", "service-life": "age_years", scorecard: "coverage_pct" };

  function reportPicker(kind) {
    const select = h("select", { id: "r-report", name: "report" },
      [...Object.keys(REPORT_COLUMNS), "claims"].map((k) => h("option", { value: k, selected: k === kind, text: t(`reports.${k}`) })));
    select.addEventListener("change", () => { location.hash = `#/reports?report=${select.value}`; });
    return h("div", {}, h("label", { for: "r-report", text: t("reports.kind") }), select);
  }

  // The claims audit: a contractor's repair claims (CSV) judged against the recorded data.
  function verdictBadge(verdict) {
    return verdict === "supported" ? "online" : verdict === "contradicts" || verdict === "overstated" ? "alarm" : "stale";
  }

  async function viewClaims() {
    const results = h("div", { id: "claims-results" });
    const error = h("p", { className: "msg error", role: "alert" });
    const form = h("form", { className: "filters", "aria-label": t("reports.claims") },
      reportPicker("claims"),
      h("div", {}, h("label", { for: "c-file", text: t("claims.file") }),
        h("input", { id: "c-file", name: "file", type: "file", accept: ".csv,text/csv", required: true })),
      h("div", {}, h("label", { for: "c-window", text: t("claims.window") }),
        h("input", { id: "c-window", name: "window", type: "number", min: "1", value: "30" })),
      h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", text: t("claims.audit") })));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      put(error);
      const file = form.file.files[0];
      if (!file) { put(error, t("claims.no_file")); return; }
      try {
        // The reasons come back in the reader's language.
        const data = await api(`/api/reports/claims?window_min=${encodeURIComponent(form.window.value || "30")}&lang=${state.lang}`,
          { method: "POST", csv: await file.text() });
        const counts = {};
        for (const v of data.claims) counts[v.verdict] = (counts[v.verdict] || 0) + 1;
        put(results,
          h("p", { id: "claims-summary" }, ["supported", "overstated", "contradicts", "cannot_tell"].map((v) =>
            [badge(verdictBadge(v), `${t(`verdict.${v}`)} ${counts[v] || 0}`), " "])),
          data.claims.length ? table(["col.line", "col.unit", "col.time", "col.type", "col.verdict", "col.evidence"], data.claims, (v) => [
            String(v.line), unitLink(v.unit_id), fmtTime(v.time), label("event", v.fault_type),
            badge(verdictBadge(v.verdict), t(`verdict.${v.verdict}`), { "data-verdict": v.verdict }),
            [v.evidence, v.cites ? [" ", h("a", { href: `#/unit/${encodeURIComponent(v.unit_id)}?evidence=${encodeURIComponent(v.cites)}`,
              "data-recorder": v.cites }, t("rec.open"))] : null]], { table: { id: "claims-table" }, label: t("reports.claims") }) : message(t("reports.none")),
          data.problems.length ? section("claims.problems", "claims-problems",
            table(["col.line", "col.reason"], data.problems, (p) => [String(p.line), p.reason], { label: t("claims.problems") })) : null);
      } catch (err) {
        put(error, t("common.error", { message: err.message }));
      }
    });
    put(main, h("h1", { text: `${t("reports.title")} · ${t("reports.claims")}` }), h("p", { text: t("claims.intro") }),
      h("p", {}, t("claims.columns"), " ", h("code", {}, "unit_id"), ` ${t("claims.or")} `, h("code", {}, "registration_code"), ", ",
        h("code", {}, "time"), ", ", h("code", {}, "fault_type")),
      form, error, results);
  }

  // What the fault rate counts, what it does not and why, and when a row is ranked.
  function rateClassification(data) {
    const types = (list) => list.map((x) => label("event", x)).join(t("rep.list_sep"));
    return h("div", { id: "rate-classification", className: "note" },
      h("p", { text: `${t("rep.counted")}: ${types(data.classification.counted)}` }),
      h("p", { text: `${t("rep.not_counted")}: ${data.classification.not_counted
        .map((c) => `${t(`class.${c.class}`)} (${types(c.types)})`).join(t("rep.list_sep"))}` }),
      h("p", { text: t("rep.ranking", { trips: data.ranking.min_trips, days: data.ranking.min_watched_days }) }));
  }

  // Report numbers with one precision per column, so a column reads evenly (1.50, 0.33,
  // not 1.5, 0.333); counts stay whole.
  const REPORT_DECIMALS = { faults_per_1000_trips: 2, faults_per_month: 2, faults_per_unit_month: 2, coverage_pct: 1,
    age_years: 1, watched_days: 1, mean_ack_s: 0, mean_resolve_s: 0, mean_rescue_s: 0, max_rescue_s: 0 };
  const REPORT_PAGE = 50;

  function fmtReport(column, value) {
    const digits = REPORT_DECIMALS[column];
    if (digits === undefined || typeof value !== "number") return fmtNumber(value);
    return value.toLocaleString(locale(), { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  // How old the units are, in five-year steps (and those without an install date).
  function ageBuckets(rows) {
    const steps = [[0, 5], [5, 10], [10, 15], [15, 20], [20, Infinity]];
    const buckets = steps.map(([lo, hi]) => ({
      label: hi === Infinity ? t("reports.age_over", { lo }) : t("reports.age_range", { lo, hi }),
      units: rows.filter((r) => r.age_years !== null && r.age_years >= lo && r.age_years < hi).length,
    }));
    buckets.push({ label: t("reports.age_unknown"), units: rows.filter((r) => r.age_years === null).length });
    return buckets;
  }

  // A service-life assessment in words: assess_N is "N years in service: a safety
  // assessment is due" (N from [reports]), unknown_age has no install date.
  function flagText(flag) {
    if (!flag) return "—";
    const years = /^assess_(\d+)$/.exec(flag);
    return years ? t("flag.assess", { years: years[1] }) : label("flag", flag);
  }

  async function viewReports(params) {
    if (params.get("report") === "claims") return viewClaims();
    const kind = REPORT_COLUMNS[params.get("report")] ? params.get("report") : "fault-rate";
    const scoped = state.user.role === "contractor";
    const groups = scoped ? ["unit", "contractor"] : ["unit", "building", "street", "contractor"];
    const by = groups.includes(params.get("by")) ? params.get("by") : (scoped ? "unit" : "street");
    const query = new URLSearchParams();
    if (kind === "fault-rate") query.set("by", by);
    for (const key of ["since", "until"]) if (params.get(key)) query.set(key, params.get(key));
    const data = await api(`/api/reports/${kind}?${query}`);
    const form = h("form", { className: "filters", "aria-label": t("reports.title") },
      reportPicker(kind),
      kind === "fault-rate" ? h("div", {}, h("label", { for: "r-by", text: t("reports.by") }),
        h("select", { id: "r-by", name: "by" }, groups.map((g) => h("option", { value: g, selected: g === by, text: t(`by.${g}`) })))) : null,
      h("div", {}, h("label", { for: "r-since", text: t("reports.since") }), h("input", { id: "r-since", name: "since", type: "date", value: data.since })),
      h("div", {}, h("label", { for: "r-until", text: t("reports.until") }), h("input", { id: "r-until", name: "until", type: "date", value: data.until })),
      h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", text: t("reports.show") })));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) next.set(k, String(v));
      location.hash = `#/reports?${next}`;
    });
    const columns = REPORT_COLUMNS[kind];
    const metric = REPORT_METRIC[kind];
    // Rows short of the exposure a rate needs never make the chart (nor the top of the table).
    const top = [...data.rows].filter((r) => r[metric] !== null && r.exposure !== "low").sort((a, b) => b[metric] - a[metric]).slice(0, 10);
    // The service-life report is every unit: a page of them at a time, and a chart of how
    // old they are instead of one equal bar per unit.
    const pageNo = kind === "service-life" ? Math.max(0, Number(params.get("p") || 0) | 0) : 0;
    const shown = kind === "service-life" ? data.rows.slice(pageNo * REPORT_PAGE, (pageNo + 1) * REPORT_PAGE) : data.rows.slice(0, 500);
    const pageLink = (n, key) => {
      const next = new URLSearchParams(params);
      next.set("report", kind);
      next.set("p", String(n));
      return h("a", { href: `#/reports?${next}`, className: "button", text: t(key) });
    };
    const pager = kind === "service-life" && data.rows.length > REPORT_PAGE
      ? h("p", { className: "pager" },
        pageNo > 0 ? pageLink(pageNo - 1, "reports.prev") : null,
        h("span", { text: t("reports.page", { from: fmtNumber(pageNo * REPORT_PAGE + 1), to: fmtNumber(pageNo * REPORT_PAGE + shown.length), n: fmtNumber(data.rows.length) }) }),
        (pageNo + 1) * REPORT_PAGE < data.rows.length ? pageLink(pageNo + 1, "reports.next") : null)
      : null;
    const chart = kind === "service-life"
      ? section("reports.age_chart", "chart-panel", bars(ageBuckets(data.rows), "units", (b) => b.label))
      : section("reports.chart", "chart-panel", bars(top, metric, (r) => r.name || r.unit_id || r.contractor || t("reports.unnamed")));
    const csv = new URLSearchParams(query);
    csv.set("format", "csv");
    put(main, 
      h("h1", { text: `${t("reports.title")} · ${t(`reports.${kind}`)}` }),
      form,
      kind === "fault-rate" ? h("p", {}, h("a", { href: `/api/reports/fault-rate?${csv}`, download: "fault-rate.csv", text: t("reports.csv") })) : null,
      kind === "fault-rate" && data.classification ? rateClassification(data) : null,
      data.rows.length ? [
        chart,
        table(["col.rank", ...columns.map((c) => `rep.${c}`)], shown, (r) => [
          String(data.rows.indexOf(r) + 1),
          ...columns.map((c) => (c === "unit_id" ? unitLink(r[c]) : (c === "name" && by === "unit" ? unitLink(r[c])
            : (c === "exposure" ? badge(r[c] === "low" ? "stale" : "online", t(`exposure.${r[c]}`))
              : (c === "flag" ? flagText(r[c]) : (c === "name" ? r[c] || t("reports.unnamed") : fmtReport(c, r[c]))))))),
        ], { table: { id: "report-table" }, rowAttrs: (r) => (kind === "fault-rate" && r.exposure === "low" ? { className: "low-exposure", "data-exposure": "low" } : {}) }),
        pager,
      ] : message(t("reports.none")),
    );
    const chartHeading = main.querySelector("#chart-panel-h");
    if (chartHeading && kind !== "service-life") chartHeading.textContent = t("reports.chart", { n: top.length, metric: t(`rep.${metric}`) });
  }

  // -- users (administrators) ----------------------------------------------------------

  const ROLES = ["regulator", "dispatcher", "contractor", "admin"];

  async function viewUsers() {
    const box = h("div", { id: "users-list" });
    const status = h("p", { className: "msg", role: "status" });
    const fill = async () => {
      const data = await api("/api/users");
      put(box, table(["col.username", "col.role", "col.contractor", "col.display_name", "col.created", "col.actions"], data.users, (u) => [
        u.username, t(`role.${u.role}`), u.contractor || "—", u.display_name || "—", fmtTime(u.created),
        u.username === state.user.username ? "—" : h("button", {
          type: "button", "data-remove": u.username, "aria-label": t("users.remove_named", { name: u.username }),
          onclick: async () => {
            try {
              await api(`/api/users/${encodeURIComponent(u.username)}`, { method: "DELETE" });
              put(status, t("users.removed", { name: u.username }));
            } catch (err) { put(status, t("common.error", { message: err.message })); }
            await fill();
          },
        }, t("users.remove")),
      ], { table: { id: "users-table" }, label: t("users.title") }));
    };
    const field = (name, key, attrs) => h("div", {}, h("label", { for: `u-${name}`, text: t(key) }),
      h("input", { id: `u-${name}`, name, ...(attrs || {}) }));
    const form = h("form", { className: "filters", "aria-label": t("users.add") },
      field("username", "col.username", { required: true, autocomplete: "off" }),
      h("div", {}, h("label", { for: "u-role", text: t("col.role") }),
        h("select", { id: "u-role", name: "role" }, ROLES.map((r) => h("option", { value: r, text: t(`role.${r}`) })))),
      field("contractor", "col.contractor"),
      field("display_name", "col.display_name"),
      field("password", "login.password", { type: "password", required: true, autocomplete: "new-password", minlength: "8" }),
      h("div", { className: "buttons" }, h("button", { type: "submit", className: "primary", text: t("users.add") })));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = Object.fromEntries(new FormData(form));
      try {
        await api("/api/users", { method: "POST", body });
        put(status, t("users.added", { name: body.username }));
        form.reset();
      } catch (err) { put(status, t("common.error", { message: err.message })); }
      await fill();
    });
    put(main, h("h1", { text: t("users.title") }), section("users.add", "add-panel", form), status, box);
    await fill();
  }

  // -- start ---------------------------------------------------------------------------

  document.getElementById("lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("lw-lang", state.lang);
    render();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/auth/logout", { method: "POST", body: {} }); } catch { /* the session is gone either way */ }
    state.user = null;
    state.csrf = "";
    location.hash = "#/";
    showLogin();
  });
  window.addEventListener("hashchange", render);

  (async () => {
    try { state.site = await api("/api/site"); } catch { /* defaults stand */ }
    if (!state.lang) state.lang = state.site.language === "en" ? "en" : "zh";
    try {
      const me = await api("/auth/me", { quiet401: true });
      state.user = me.user;
      state.csrf = me.csrf;
    } catch { state.user = null; }
    state.navigated = false;
    await render();
  })();
})();
