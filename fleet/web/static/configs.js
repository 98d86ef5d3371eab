// Remote configuration (issue 20): the administrators' page of desired against applied
// configuration per agent, out of app.js so that its edits do not collide. app.js calls
// window.LW_CONFIGS.viewConfigs with its helpers (t, api, h, put, message). Every label
// is in i18n.js (cfg.*), Chinese and English. The server answers 403 to anyone but an
// administrator. Setting and rolling back documents are the CLI's (liftwatch-fleet config).
"use strict";
(() => {
  const BADGE = { in_sync: "badge-online", pending: "badge-stale", rejected: "badge-offline", own_file: "" };

  function table(x, agents) {
    const { h, t } = x;
    const columns = ["cfg.agent", "cfg.desired", "cfg.applied", "cfg.state", "cfg.problems"];
    return h("div", { className: "scroll", tabindex: "0", role: "region", "aria-label": t("cfg.title") },
      h("table", {},
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: t(c) })))),
        h("tbody", {}, agents.map((a) => h("tr", {},
          h("td", { text: a.agent_id }),
          h("td", { text: a.desired_version ? t("cfg.version_of", { document: a.desired_document, n: a.desired_version }) : "—" }),
          h("td", { text: a.applied_version ? t("cfg.version_n", { n: a.applied_version }) : t("cfg.own_file") }),
          h("td", {}, h("span", { className: `badge ${BADGE[a.state] || ""}`, text: t(`cfg.s_${a.state}`) })),
          h("td", {}, a.problems.length ? h("ul", {}, a.problems.map((p) => h("li", { text: p }))) : "—"))))));
  }

  async function viewConfigs(x) {
    const { h, put, t, api, message } = x;
    const data = await api("/api/configs");
    const main = document.getElementById("main");
    const count = (state) => data.agents.filter((a) => a.state === state).length;
    put(main,
      h("h1", { text: t("cfg.title") }),
      h("p", { text: t("cfg.intro") }),
      h("p", { role: "status", text: t("cfg.count", { n: data.agents.length, pending: count("pending"), rejected: count("rejected") }) }),
      data.agents.length ? table(x, data.agents) : message(t("cfg.none")));
  }

  window.LW_CONFIGS = { viewConfigs };
})();
