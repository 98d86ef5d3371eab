// Agent updates (issue 20): the administrators' page of rollouts, their progress per wave
// and the releases kept, out of app.js so that its edits do not collide. app.js calls
// window.LW_ROLLOUTS.viewRollouts with its helpers (t, api, h, put, table, ...). Every label is
// in i18n.js (roll.*), Chinese and English. The server answers 403 to anyone but an
// administrator. Starting, pausing and aborting are the CLI's (liftwatch-fleet rollout).
"use strict";
(() => {
  const STATES = ["pending", "offered", "trial", "healthy", "failed", "rolled_back"];
  const BADGE = { running: "badge-online", paused: "badge-stale", halted: "badge-offline", aborted: "", done: "badge-online" };

  // A wave's progress: a bar of its agents by state (a text twin for screen readers).
  function progress(x, w) {
    const { h, t } = x;
    const parts = STATES.filter((s) => w[s] > 0).map((s) => `${t(`roll.state_${s}`)} ${w[s]}`);
    const done = w.healthy + w.failed + w.rolled_back;
    return h("div", {},
      h("progress", { max: String(w.agents), value: String(done), "aria-label": t("roll.wave_n", { n: w.wave }) }),
      h("span", { text: ` ${parts.join(" · ")}` }));
  }

  function rollout(x, r) {
    const { h, t } = x;
    return h("section", { "aria-label": t("roll.rollout_n", { n: r.rollout_id }) },
      h("h2", {}, `${t("roll.rollout_n", { n: r.rollout_id })}: ${r.release_id} (${r.version}) `,
        h("span", { className: `badge ${BADGE[r.state] || ""}`, text: t(`roll.r_${r.state}`) })),
      r.reason ? h("p", { role: r.state === "halted" ? "alert" : "note", text: r.reason }) : "",
      x.table(["roll.wave", "roll.agents", "roll.progress", "roll.failures"], r.waves, (w) => [
        w.wave === r.wave && (r.state === "running" || r.state === "paused") ? `${t("roll.wave_n", { n: w.wave })} ◀` : t("roll.wave_n", { n: w.wave }),
        String(w.agents),
        progress(x, w),
        w.failures.length ? h("ul", {}, w.failures.map((f) => h("li", { text: f }))) : "—",
      ]));
  }

  async function viewRollouts(x) {
    const { h, put, t, api, message } = x;
    const data = await api("/api/rollouts");
    const main = document.getElementById("main");
    const halted = data.rollouts.filter((r) => r.state === "halted").length;
    put(main,
      h("h1", { text: t("roll.title") }),
      h("p", { text: t("roll.intro") }),
      h("p", { role: "status", text: t("roll.count", { n: data.rollouts.length, halted }) }),
      ...(data.rollouts.length ? data.rollouts.map((r) => rollout(x, r)) : [message(t("roll.none"))]),
      h("h2", { text: t("roll.releases") }),
      data.releases.length
        ? x.table(["roll.release", "roll.version", "roll.wheels"], data.releases, (r) => [r.release_id, r.version, String(r.wheels)])
        : message(t("roll.no_releases")));
  }

  window.LW_ROLLOUTS = { viewRollouts };
})();
