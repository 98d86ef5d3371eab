// The dispatcher's "crew dispatched" step (issue 19): on an acknowledged alarm, who was
// sent (a name or team) and when they are expected (in minutes, or a clock time of the
// site's day), with the row's note;
// and the line the alarm row and its lifecycle show, "已派遣 张三 · 预计 04:20 到达", the
// ETA in the site's time zone. The fleet keeps the alarm acknowledged (POST
// /api/alarms/{id}/dispatch); sending again replaces who and when, the history keeps each.
"use strict";
(() => {
  const MAX_CREW = 80; // fleet.store.base.MAX_CREW_CHARS
  const MAX_ETA_MINUTES = 1440; // fleet.web.lifecycle.MAX_ETA_MINUTES

  function clock(r, iso) {
    return new Intl.DateTimeFormat(r.state.lang === "zh" ? "zh-CN" : "en-GB", {
      timeZone: r.state.site.time_zone, hour: "2-digit", minute: "2-digit", hour12: false,
    }).format(new Date(iso));
  }

  // "已派遣 张三 · 预计 04:20 到达" in the reader's language; null before any dispatch.
  function line(r, alarm) {
    if (!alarm.crew) return null;
    return r.t("crew.line", { crew: alarm.crew, eta: alarm.crew_eta ? clock(r, alarm.crew_eta) : "—" });
  }

  // The same line as a node for the alarm row's state cell.
  function note(r, alarm) {
    const text = line(r, alarm);
    return text ? r.h("span", { className: "crew-note", "data-crew": alarm.crew, text }) : null;
  }

  // Now as "HH:MM" on the site's clock, to compare with an ETA typed as a clock time.
  function siteNow(r) {
    return new Intl.DateTimeFormat("en-GB", {
      timeZone: r.state.site.time_zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).format(new Date());
  }

  // Who and when: in how many minutes, or at a clock time of the site's day (the fleet
  // stores the absolute time and refuses one earlier than now), and the button that
  // records them; ``noteInput`` is the
  // row's note (sent as the step's reason), ``error`` the row's alert, ``after`` re-reads.
  function form(r, alarm, noteInput, error, after) {
    const who = r.h("input", {
      type: "text", name: "crew", className: "crew-who", maxlength: MAX_CREW,
      "aria-label": r.t("crew.who"), placeholder: r.t("crew.who"), autocomplete: "off",
    });
    const minutes = r.h("input", {
      type: "number", name: "eta_minutes", className: "crew-eta", min: 0, max: MAX_ETA_MINUTES,
      step: 1, inputmode: "numeric", "aria-label": r.t("crew.eta"), placeholder: r.t("crew.eta_short"),
    });
    const at = r.h("input", {
      type: "time", name: "eta_at", className: "crew-at", step: 60,
      "aria-label": r.t("crew.at"), title: r.t("crew.at"),
    });
    const send = r.h("button", {
      type: "button", className: "primary", "data-action": "dispatch",
      onclick: async (e) => {
        const crew = who.value.trim();
        const eta = Number(minutes.value);
        const clockTime = at.value; // "HH:MM" (24-hour) or "" when not given
        const byMinutes = minutes.value !== "" && Number.isFinite(eta) && eta >= 0 && eta <= MAX_ETA_MINUTES;
        if (!crew || (clockTime === "" && !byMinutes) || (clockTime !== "" && minutes.value !== "")) {
          error.textContent = r.t("crew.needed", { id: alarm.alarm_id, max: MAX_ETA_MINUTES });
          (crew ? minutes : who).focus();
          return;
        }
        if (clockTime !== "" && clockTime < siteNow(r)) {
          error.textContent = r.t("crew.past", { id: alarm.alarm_id, at: clockTime, now: siteNow(r) });
          at.focus();
          return;
        }
        e.target.disabled = true;
        const body = clockTime !== "" ? { crew, eta_at: clockTime } : { crew, eta_minutes: eta };
        if (noteInput && noteInput.value.trim()) body.reason = noteInput.value.trim();
        try {
          await r.api(`/api/alarms/${alarm.alarm_id}/dispatch`, { method: "POST", body });
          r.announce(r.t("done.dispatch", { id: alarm.alarm_id, crew }));
        } catch (err) {
          r.announce(r.t("alarms.failed", { id: alarm.alarm_id, message: err.message }));
        }
        after();
      },
    }, r.t("action.dispatch"));
    return r.h("div", { className: "crew-form", role: "group", "aria-label": r.t("crew.form") }, who, minutes, at, send);
  }

  window.LW_CREW = { line, note, form };
})();
