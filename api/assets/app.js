// CronBox web app: progressive enhancement only. Every page works without this file; it adds
// confirmations, the schedule preview while typing, and the live execution log.
// Loaded as a module from /assets (CSP: script-src 'self', no inline script).

for (const el of document.querySelectorAll("[data-confirm]")) {
  el.addEventListener("click", (ev) => {
    if (!window.confirm(el.dataset.confirm)) ev.preventDefault();
  });
}

// The cron editor: show the fields of the chosen schedule shape, and the next runs as you type.
const editor = document.getElementById("cron-editor");
if (editor) {
  const mode = editor.querySelector("#mode");
  const show = {
    minutes: ["every_minutes"],
    hours: ["every_hours"],
    daily: ["time"],
    weekly: ["time", "days"],
    monthly: ["time", "day_of_month"],
    custom: ["expression"],
  };
  const groups = {
    every_minutes: ["every_minutes"],
    every_hours: ["every_hours"],
    time: ["time"],
    day_of_month: ["day_of_month", "dom-hint"],
    expression: ["expression", "expr-hint"],
  };
  const toggle = () => {
    const visible = show[mode.value] || [];
    for (const [name, ids] of Object.entries(groups)) {
      for (const id of ids) {
        const input = document.getElementById(id);
        if (!input) continue;
        const label = editor.querySelector(`label[for="${id}"]`);
        input.hidden = !visible.includes(name);
        if (label) label.hidden = input.hidden;
      }
    }
    const days = editor.querySelector("fieldset.days");
    if (days) days.hidden = !visible.includes("days");
  };
  mode.addEventListener("change", toggle);
  toggle();
  const target = editor.dataset.preview;
  let timer = null;
  let seq = 0;
  const refresh = async () => {
    const mine = ++seq;
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(editor)) {
      if (["mode", "every_minutes", "every_hours", "time", "days", "day_of_month", "expression", "timezone"].includes(k)) q.append(k, v);
    }
    try {
      const r = await fetch(`${target}&${q}`, { headers: { accept: "text/html" }, credentials: "same-origin" });
      if (!r.ok || mine !== seq) return;
      const html = await r.text();
      const doc = new DOMParser().parseFromString(html, "text/html");
      const fresh = doc.getElementById("schedule-preview");
      const old = document.getElementById("schedule-preview");
      if (fresh && old) old.replaceWith(fresh);
    } catch (_) {
      // Offline or refused: the preview button still works.
    }
  };
  editor.querySelector("#builder").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  });
  const button = document.getElementById("preview-button");
  if (button) button.hidden = true;
}

// The execution log: the live feed says something changed; the server renders the rows again.
const live = document.getElementById("live-state");
if (live && live.dataset.live && window.EventSource) {
  const body = () => document.getElementById("runs-body");
  // At most one fetch of the rows a second, however busy the workspace: the first change
  // after a quiet spell shows within 150 ms, a burst every second.
  let pending = null;
  let inFlight = false;
  let last = 0;
  const reload = async () => {
    pending = null;
    const wait = last + 1000 - Date.now();
    if (inFlight || wait > 0) {
      pending = setTimeout(reload, Math.max(wait, 150));
      return;
    }
    last = Date.now();
    inFlight = true;
    try {
      const r = await fetch(live.dataset.rows, { headers: { accept: "text/html" }, credentials: "same-origin" });
      if (r.ok) {
        const doc = new DOMParser().parseFromString(`<table>${await r.text()}</table>`, "text/html");
        const fresh = doc.getElementById("runs-body");
        const old = body();
        if (fresh && old) old.replaceWith(fresh);
      }
    } catch (_) {
      // The next event tries again.
    } finally {
      inFlight = false;
    }
  };
  const connect = () => {
    const es = new EventSource(live.dataset.live, { withCredentials: true });
    es.onopen = () => {
      live.textContent = live.dataset.on || live.textContent;
      live.classList.add("on");
    };
    es.onmessage = () => {
      if (!pending) pending = setTimeout(reload, 150);
    };
    es.addEventListener("stream_error", () => {
      es.close();
      live.classList.remove("on");
      setTimeout(connect, 2000);
    });
  };
  connect();
}

// Pages that follow a running job of the server (a projection rebuild) reload themselves.
const refresh = document.querySelector("[data-refresh]");
if (refresh) {
  setTimeout(() => window.location.reload(), Number(refresh.dataset.refresh) || 1000);
}

// Figures that follow the server (the admin panel's): the element is fetched again from the
// same page every few seconds and swapped in place.
for (const el of document.querySelectorAll("[data-poll]")) {
  const every = Math.max(Number(el.dataset.poll) || 5000, 1000);
  const tick = async () => {
    try {
      const r = await fetch(window.location.href, { headers: { accept: "text/html" }, credentials: "same-origin" });
      if (r.ok) {
        const fresh = new DOMParser().parseFromString(await r.text(), "text/html").getElementById(el.id);
        const old = document.getElementById(el.id);
        if (fresh && old) old.replaceWith(fresh);
      }
    } catch (_) {
      // The next tick tries again.
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
