// Maintenance truth (issue 17): the records page (each contractor's verdict shares, the
// records with their verdict and evidence, the upload of a contractor's CSV) and the
// visits on a unit page, kept out of app.js so that their edits do not collide. app.js
// calls window.LW_MAINT.viewRecords / unitVisits with its helpers (t, api, h, put,
// table, ...).
// Every label is in i18n.js (mnt.*), Chinese and English; the evidence sentences come
// from the API in the reader's language. The server scopes everything: a contractor sees
// its own records and units only, and files records for its own units only.
"use strict";
(() => {
  const VERDICTS = ["supported", "too_short", "contradicted", "cannot_tell"];
  const BADGE = { supported: "online", too_short: "stale", contradicted: "alarm", cannot_tell: "never_seen" };

  function verdictBadge(x, verdict) {
    return x.badge(BADGE[verdict] || "never_seen", x.t(`mnt.verdict.${verdict}`), { "data-verdict": verdict });
  }

  function minutes(seconds) {
    return Math.round((seconds || 0) / 60);
  }

  function visitText(x, v) {
    const { t, fmtTime } = x;
    return t("mnt.visit_line", {
      id: v.id, start: fmtTime(v.start), end: v.end ? fmtTime(v.end) : t("mnt.going_on"),
      min: minutes(v.watched_s ?? v.duration_s), mode: t(`mnt.mode.${v.mode}`),
    });
  }

  function uploadForm(x, after) {
    const { h, t, api, state } = x;
    const status = h("p", { role: "status", className: "msg", id: "mnt-upload-status" });
    const problems = h("div", { id: "mnt-upload-problems" });
    const file = h("input", { id: "mnt-file", name: "file", type: "file", accept: ".csv,text/csv", required: true });
    const contractor = state.user.role === "admin"
      ? [h("label", { for: "mnt-contractor", text: t("mnt.upload_contractor") }), h("input", { id: "mnt-contractor", name: "contractor", required: true })]
      : [];
    const form = h("form", { className: "upload", id: "mnt-upload" },
      h("h2", { text: t("mnt.upload_title") }),
      h("p", { text: t("mnt.upload_intro") }),
      h("label", { for: "mnt-file", text: t("mnt.upload_file") }), file,
      ...contractor,
      h("button", { type: "submit", className: "primary", text: t("mnt.upload_submit") }),
      status, problems);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      status.textContent = "";
      status.className = "msg";
      x.put(problems);
      const chosen = file.files?.[0];
      if (!chosen) return;
      const who = state.user.role === "admin" ? `&contractor=${encodeURIComponent(form.contractor.value)}` : "";
      try {
        const done = await api(`/api/maintenance/records?lang=${state.lang}${who}`, { method: "POST", csv: await chosen.text() });
        // The page is drawn again with the new verdicts; the outcome goes in its new form.
        await after();
        const said = document.getElementById("mnt-upload-status") || status;
        said.textContent = t("mnt.upload_done", { stored: done.stored, duplicates: done.duplicates, refused: done.problems.length });
        if (done.problems.length) {
          x.put(document.getElementById("mnt-upload-problems") || problems,
            x.table(["mnt.line", "mnt.reason"], done.problems, (p) => [String(p.line), p.reason]));
        }
        x.announce(said.textContent);
      } catch (err) {
        status.textContent = t("common.error", { message: err.message });
        status.className = "msg error";
      }
    });
    return form;
  }

  async function viewRecords(x, params) {
    const { h, put, t, api, state, message, fmtTime } = x;
    const main = document.getElementById("main");
    const verdict = VERDICTS.includes(params.get("verdict")) ? params.get("verdict") : "";
    const query = `lang=${encodeURIComponent(state.lang)}&limit=500${verdict ? `&verdict=${verdict}` : ""}`;
    const [shares, data] = await Promise.all([
      api("/api/maintenance/shares"),
      api(`/api/maintenance/records?${query}`),
    ]);
    const filters = h("p", { className: "filters" },
      [["", "mnt.all"], ...VERDICTS.map((v) => [v, `mnt.verdict.${v}`])].map(([v, key]) =>
        h("a", { href: v ? `#/maintenance?verdict=${v}` : "#/maintenance", className: "button ghost",
          "aria-current": v === verdict ? "page" : null, text: t(key) })));
    const canFile = ["contractor", "admin"].includes(state.user.role);
    put(main,
      h("h1", { text: t("mnt.title") }),
      h("p", { text: t("mnt.intro") }),
      h("h2", { text: t("mnt.shares") }),
      shares.contractors.length
        ? x.table(["mnt.contractor", "mnt.records", ...VERDICTS.map((v) => `mnt.verdict.${v}`)], shares.contractors, (s) => [
          s.contractor || "—", String(s.records),
          ...VERDICTS.map((v) => `${s[v]} (${s[`${v}_pct`] ?? 0} %)`),
        ])
        : message(t("mnt.none")),
      h("h2", { text: t("mnt.records_title") }),
      filters,
      data.records.length
        ? x.table(["mnt.unit", "mnt.contractor", "mnt.kind", "mnt.claimed", "mnt.workers", "mnt.verdict", "mnt.evidence"], data.records, (r) => [
          h("a", { href: `#/unit/${encodeURIComponent(r.unit_id)}` }, r.unit_id),
          r.contractor,
          t(`mnt.kind.${r.kind}`),
          `${fmtTime(r.start)} – ${fmtTime(r.end)}`,
          r.workers || "—",
          verdictBadge(x, r.verdict),
          h("div", {}, h("p", { text: r.evidence }), r.visits.length ? h("ul", {}, r.visits.map((v) => h("li", { text: visitText(x, v) }))) : null),
        ])
        : message(t("mnt.none")),
      canFile ? uploadForm(x, () => viewRecords(x, params)) : null);
  }

  // The unit page's visits: filled when the API answers; "unknown" (never "none") where
  // the unit's profile cannot see its service mode.
  function unitVisits(x, unitId) {
    const { h, put, t, api, message, fmtTime } = x;
    const box = h("div", { id: "visits" }, message(t("common.loading")));
    api(`/api/units/${encodeURIComponent(unitId)}/visits?limit=50`).then((data) => {
      if (data.unknown_units.includes(unitId)) return put(box, message(t("mnt.visits_unknown")));
      put(box, data.visits.length
        ? x.table(["mnt.start", "mnt.end", "mnt.minutes", "mnt.mode", "mnt.runs", "mnt.landings", "mnt.doors"], data.visits, (v) => [
          fmtTime(v.start), v.end ? fmtTime(v.end) : t("mnt.going_on"), String(minutes(v.watched_s)),
          t(`mnt.mode.${v.mode}`), String(v.inspection_runs), String(v.landings_visited), String(v.door_cycles),
        ])
        : message(t("mnt.no_visits")));
    }).catch((err) => put(box, message(t("common.error", { message: err.message }), "error")));
    return box;
  }

  window.LW_MAINT = { viewRecords, unitVisits };
})();
