// Regional platforms (issue 21): the administrators' page of northbound forwarding, kept
// out of app.js so that its edits do not collide. app.js calls
// window.LW_NORTH.viewNorthbound with its helpers (t, api, h, put, ...). Every label is
// in i18n.js (north.*), Chinese and English. The server answers 403 to anyone but an
// administrator: dead letters hold whole messages of every unit of the district.
"use strict";
(() => {
  const REPLAY = "liftwatch-fleet northbound replay";

  function grid(x, columns, rows, cells) {
    const { h, t } = x;
    return h("div", { className: "scroll", tabindex: "0", role: "region", "aria-label": columns.map((c) => t(c)).join(", ") },
      h("table", {},
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: t(c) })))),
        h("tbody", {}, rows.map((row) => h("tr", {}, cells(row).map((c) => h("td", {}, c)))))));
  }

  function age(x, seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return x.t("north.seconds", { n: Math.round(seconds) });
    if (seconds < 3600) return x.t("north.minutes", { n: Math.round(seconds / 60) });
    return x.t("north.hours", { n: (seconds / 3600).toFixed(1) });
  }

  async function viewNorthbound(x) {
    const { h, put, t, api, message, fmtTime } = x;
    const data = await api("/api/northbound");
    const main = document.getElementById("main");
    const behind = data.platforms.filter((p) => p.backlog > 0).length;
    put(main,
      h("h1", { text: t("north.title") }),
      h("p", { text: t("north.intro") }),
      h("p", { role: "status", text: t("north.count", { n: data.platforms.length, behind, dead: data.dead_letters.filter((d) => d.state === "dead").length }) }),
      data.platforms.length
        ? grid(x, ["north.platform", "north.backlog", "north.oldest", "north.sent", "north.rejected", "north.dead", "north.sender", "north.last_error"],
          data.platforms, (p) => [
            p.platform,
            h("span", { className: p.backlog > 0 ? "badge badge-stale" : "badge badge-online", text: String(p.backlog) }),
            age(x, p.oldest_unsent_age_s),
            String(p.sent),
            String(p.rejected),
            h("span", { className: p.dead_letters > 0 ? "badge badge-offline" : "", text: String(p.dead_letters) }),
            p.sender || t("north.no_sender"),
            p.last_error ? [fmtTime(p.last_error_at), h("br"), h("small", {}, p.last_error)] : "—",
          ])
        : message(t("north.none")),
      h("h2", { text: t("north.dead_title") }),
      // The command in the sentence shown as code (it is typed as it is, in either language).
      h("p", {}, t("north.dead_intro").split(REPLAY).flatMap((part, i) => (i ? [h("code", {}, REPLAY), part] : [part]))),
      data.dead_letters.length
        ? grid(x, ["north.platform", "north.unit", "north.message", "north.status", "north.reason", "north.dead_at", "north.state"],
          data.dead_letters, (d) => [
            d.platform,
            h("a", { href: `#/unit/${encodeURIComponent(d.unit_id)}` }, `${d.unit_id} #${d.seq}`),
            d.message,
            d.status === null ? "—" : String(d.status),
            d.reason,
            fmtTime(d.dead_at),
            t(`north.state_${d.state}`),
          ])
        : message(t("north.no_dead")));
  }

  window.LW_NORTH = { viewNorthbound };
})();
