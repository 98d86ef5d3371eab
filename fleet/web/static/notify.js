// The dispatcher's notice of a new entrapment (issue 19): opt-in, per browser. When it is
// on, an entrapment RAISED on the live stream plays a tone made with the Web Audio API
// (no sound file, nothing fetched), turns the header red for a while, prefixes the tab's
// title, and shows a system notification if the browser granted the permission.
//
// The tone needs an AudioContext created by a user's gesture, so the toggle's click makes
// it; after a reload the first click anywhere on the page makes it again.
"use strict";
(() => {
  const KEY = "lw-notify";
  const FLASH_MS = 15000;
  let audio = null;
  let flashTimer = 0;

  function enabled() {
    return localStorage.getItem(KEY) === "1";
  }

  function makeAudio() {
    if (audio || !window.AudioContext) return;
    audio = new AudioContext();
  }

  // Three short high beeps: heard over a control room, unlike any page sound.
  function beep() {
    if (!audio) return;
    audio.resume?.();
    const start = audio.currentTime;
    for (let i = 0; i < 3; i += 1) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, start + i * 0.35);
      gain.gain.exponentialRampToValueAtTime(0.25, start + i * 0.35 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.35 + 0.25);
      osc.connect(gain).connect(audio.destination);
      osc.start(start + i * 0.35);
      osc.stop(start + i * 0.35 + 0.3);
    }
  }

  function flash(text) {
    document.body.classList.add("alerting");
    if (!document.title.startsWith("⚠")) document.title = `⚠ ${document.title}`;
    const notice = document.getElementById("notice");
    if (notice) notice.textContent = text;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      document.body.classList.remove("alerting");
      document.title = document.title.replace(/^⚠ /, "");
    }, FLASH_MS);
  }

  // The toggle, for roles that act on alarms (app.js places it).
  function optIn(ctx) {
    const { h, t } = ctx;
    const box = h("input", { type: "checkbox", id: "notify-toggle", checked: enabled() });
    const note = h("span", { className: "msg", id: "notify-state" });
    const say = () => {
      const denied = window.Notification && Notification.permission === "denied";
      note.textContent = enabled() ? t(denied ? "notify.on_no_permission" : "notify.on") : "";
    };
    box.addEventListener("change", async () => {
      if (!box.checked) {
        localStorage.removeItem(KEY);
        say();
        return;
      }
      localStorage.setItem(KEY, "1");
      makeAudio();
      if (window.Notification && Notification.permission === "default") {
        try { await Notification.requestPermission(); } catch { /* the tone and the flash still work */ }
      }
      say();
    });
    say();
    return h("p", { className: "check" }, box, h("label", { for: "notify-toggle", text: t("notify.toggle") }), " ", note);
  }

  // An event off the live stream: a new entrapment, when the notice is on.
  function onEvent(ctx, event) {
    if (!enabled() || event.type !== "ENTRAPMENT" || event.phase !== "RAISED") return;
    const text = ctx.t("notify.entrapment", { unit: event.unit_id, floor: event.floor ?? "—" });
    flash(text);
    beep();
    if (window.Notification && Notification.permission === "granted") {
      try { new Notification("LiftWatch", { body: text, tag: `lw-${event.event_id}`, requireInteraction: true }); } catch { /* shown on the page anyway */ }
    }
  }

  document.addEventListener("click", () => { if (enabled()) makeAudio(); }, { once: true });
  window.LW_NOTIFY = { optIn, onEvent };
})();
