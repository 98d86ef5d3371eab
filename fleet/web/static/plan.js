// The maintenance plan by need and the district's publication (issue 17): two views of
// the dashboard, kept out of app.js so that their edits do not collide. app.js calls
// window.LW_PLAN.viewPlan / viewPublication with its helpers (t, api, h, put, ...).
// Every label is in i18n.js (plan.*, pub.*), Chinese and English. The server scopes
// everything: a contractor's plan holds its own units, and unpublished lists answer 403
// to anyone but regulators and administrators.
"use strict";
(() => {
  // app.js's table (one header row, a row of cells per item), for both views.
  function grid(x, columns, rows, cells) {
    return x.table(columns, rows, cells);
  }

  function unitLink(x, unitId) {
    return x.h("a", { href: `#/unit/${encodeURIComponent(unitId)}` }, unitId);
  }

  // Rows a page shows (soonest due first); the CSV and the calendar hold every unit. A
  // district has thousands: a table of all of them would make the page unusable.
  const SHOWN = 200;

  async function viewPlan(x, params) {
    const { h, put, t, api, state, message } = x;
    const overdue = params.get("overdue") === "1";
    const query = `lang=${encodeURIComponent(state.lang)}${overdue ? "&overdue=true" : ""}`;
    const data = await api(`/api/maintenance/plan?${query}`);
    const late = data.units.filter((u) => u.overdue).length;
    const soon = new Set(data.due_this_week);
    const toggle = h("a", { href: overdue ? "#/plan" : "#/plan?overdue=1", className: "button ghost",
      text: overdue ? t("plan.show_all") : t("plan.overdue_only") });
    const downloads = h("p", {},
      h("a", { href: `/api/maintenance/plan?format=csv&${query}`, download: "maintenance-plan.csv", text: t("plan.csv") }), " · ",
      h("a", { href: `/api/maintenance/plan?format=ics&${query}`, download: "maintenance-plan.ics", text: t("plan.ics") }));
    put(document.getElementById("main"),
      h("h1", { text: t("plan.title") }),
      h("p", { text: t("plan.intro") }),
      h("p", { role: "status", text: t("plan.count", { n: data.units.length, overdue: late, week: soon.size }) }),
      h("p", {}, toggle), downloads,
      data.units.length > SHOWN ? h("p", { className: "msg", text: t("plan.first", { shown: SHOWN, n: data.units.length }) }) : null,
      data.units.length
        ? grid(x, ["plan.unit", "plan.contractor", "plan.due", "plan.days_left", "plan.on_demand", "plan.why"], data.units.slice(0, SHOWN), (u) => [
          unitLink(x, u.unit_id),
          u.contractor || "—",
          u.due,
          h("span", { className: u.overdue ? "badge badge-offline" : soon.has(u.unit_id) ? "badge badge-stale" : "" },
            u.overdue ? t("plan.overdue_by", { d: -u.days_left }) : t("plan.in_days", { d: u.days_left })),
          u.on_demand ? t("plan.yes") : t("plan.no"),
          u.why,
        ])
        : message(t("plan.none")));
  }

  const LISTS = ["high_fault", "three_no", "aged_without_assessment", "overdue", "contradicted_contractors"];

  async function viewPublication(x) {
    const { h, put, t, api, state, message, fmtTime } = x;
    const main = document.getElementById("main");
    const data = await api("/api/publication");
    const canPublish = state.user?.role === "regulator";
    const notice = h("p", { role: "status", className: "msg", id: "pub-status" });
    const act = async (path) => {
      notice.textContent = "";
      try {
        await api(path, { method: "POST", body: {} });
        await viewPublication(x);
        document.getElementById("pub-status").textContent = t("pub.done");
      } catch (err) {
        notice.textContent = t("common.error", { message: err.message });
        notice.className = "msg error";
      }
    };
    const rows = data.publications;
    put(main,
      h("h1", { text: t("pub.title") }),
      h("p", { text: data.approval_by_another ? t("pub.intro_four_eyes") : t("pub.intro") }),
      h("p", {}, h("a", { href: "/public/", text: t("pub.public_link") })),
      canPublish ? h("p", {}, h("button", { type: "button", className: "primary", id: "pub-draft", text: t("pub.draft"),
        onclick: () => act("/api/publication/draft") })) : null,
      notice,
      rows.length
        ? grid(x, ["pub.id", "pub.state", "pub.as_of", "pub.drafted_by", "pub.approved_by", "pub.published", "pub.counts", "pub.actions"], rows, (p) => [
          String(p.id),
          t(`pub.state.${p.state}`),
          fmtTime(p.as_of),
          p.drafted_by,
          p.approved_by || "—",
          p.published ? fmtTime(p.published) : "—",
          LISTS.map((name) => `${t(`pub.list.${name}`)} ${p.counts[name] ?? 0}`).join("；"),
          canPublish && p.state === "draft" ? h("button", { type: "button", text: t("pub.approve"), onclick: () => act(`/api/publication/${p.id}/approve`) })
            : canPublish && p.state === "approved" ? h("button", { type: "button", text: t("pub.publish"), onclick: () => act(`/api/publication/${p.id}/publish`) })
              : "—",
        ])
        : message(t("pub.none")),
      h("h2", { text: t("pub.steps") }),
      data.steps.length
        ? grid(x, ["pub.id", "pub.step", "pub.by", "pub.at"], data.steps, (s) => [
          String(s.publication_id), t(`pub.step.${s.step}`), s.username, fmtTime(s.at),
        ])
        : message(t("pub.none")));
  }

  window.LW_PLAN = { viewPlan, viewPublication };
})();
