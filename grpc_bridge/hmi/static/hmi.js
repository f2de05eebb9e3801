// evo operator HMI: one page, live over a WebSocket, commands over the HTTP/JSON API (same code path
// as gRPC). No library, nothing loaded from elsewhere. A value whose source is not live is greyed
// and badged, never shown as current; every command's result is shown as the API returned it.
"use strict";
(() => {
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => Array.from(r.querySelectorAll(s));
  const PLOT_S = 10;  // seconds of history in the axis plots
  const S = {
    token: sessionStorage.getItem("evo-token") || "", role: null, session: null, sample: null,
    modules: null, ws: null, retry: 0, rate: null, lastSampleAt: 0, hist: {}, ioBuilt: false,
    connected: false, tab: "machine", dirtyPlots: false,
  };

  // ---------------------------------------------------------------------------------- helpers --
  const PREFIX = /^(MACHINE_STATE|SAFETY_STATE|POWER_STATE|MOTION_STATE|OPERATIONAL_MODE|RE_STATE|STEP_RESULT|DRIVER_STATE|MODULE_STATE|RESULT_CODE|COMMAND_SOURCE|SAFE_STOP_CATEGORY|EVENT_KIND|COUPLING_STATE|GEARBOX_STATE|LOADING_STATE)_/;
  const short = (v) => String(v ?? "—").replace(PREFIX, "");
  const num = (v, d = 2) => (typeof v === "number" && isFinite(v)) ? v.toFixed(d) : (v === undefined ? "—" : String(v));
  const yesno = (b) => (b ? "yes" : "no");
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const setText = (node, text) => { if (node && node.textContent !== text) node.textContent = text; };
  const cls = (node, name, on) => { if (node) node.classList.toggle(name, !!on); };
  const authHeaders = () => (S.token ? { Authorization: "Bearer " + S.token } : {});
  const fmtDuration = (s) => {
    if (!(s > 0)) return "—";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
  };
  const stateClass = (v) => {
    const s = short(v);
    if (/DISABLED|NONE/.test(s)) return "st-muted";
    if (/ERROR|FAULT|SAFETY_STOP|FAILED|POWER_OFF|OFFLINE|ABORTED|EMERGENCY/.test(s)) return "st-bad";
    if (/REDUCED|STARTING|BACKOFF|STOPPING|DEGRADED|PAUSED|POWERING|INIT|STOPPED/.test(s)) return "st-warn";
    return "st-ok";
  };
  const setState = (node, v) => {
    if (!node) return;
    setText(node, short(v));
    node.classList.remove("st-ok", "st-warn", "st-bad", "st-muted");
    node.classList.add(stateClass(v));
  };

  async function getJSON(url) {
    const r = await fetch(url, { headers: authHeaders() });
    const j = await r.json();
    if (!r.ok) { const e = new Error(`${j.code}: ${j.message}`); e.status = r.status; throw e; }
    return j;
  }

  function showResult(ok, text) {
    const box = $("#result");
    box.hidden = false; box.className = ok ? "ok" : "bad"; box.dataset.ok = ok ? "1" : "0";
    box.textContent = text;
  }

  // A command: POST the request, show the API's answer (OK + message, or gRPC code + message).
  async function command(method, body, label) {
    let r, j;
    try {
      r = await fetch("/api/v1/" + method, {
        method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body || {}),
      });
      j = await r.json();
    } catch (e) {
      showResult(false, `${label}: no answer from the bridge (${e.message})`);
      return null;
    }
    if (r.ok) {
      showResult(true, `${label}: OK${j.message ? " — " + j.message : ""} (${num(j.round_trip_ms, 1)} ms)`);
      return j;
    }
    showResult(false, `${label}: ${j.code} — ${j.message}`);
    return null;
  }

  // A typed number goes as a number; anything else goes as typed, for the API to judge.
  const typed = (text) => { const t = text.trim(); return t !== "" && isFinite(Number(t)) ? Number(t) : t; };

  // ------------------------------------------------------------------------------ liveness --
  function setSource(src, ok, reason) {
    for (const node of $$(`[data-source="${src}"]`)) {
      cls(node, "stale", !ok);
      for (const b of $$(":scope > .notlive-badge, :scope > h2 > .notlive-badge", node)) {
        b.hidden = ok;
        setText(b, ok ? "" : "NOT LIVE: " + reason);
      }
    }
  }

  function setConn(ok, text) {
    S.connected = ok;
    const c = $("#conn");
    c.className = "badge " + (ok ? "ok" : "bad");
    setText(c, text);
    if (!ok) for (const src of ["cu", "hal", "re"]) setSource(src, false, text);
  }

  // Without samples for a while (bridge stuck, network), nothing on the page is current any more.
  setInterval(() => {
    if (!S.connected || !S.rate) return;
    const age = (performance.now() - S.lastSampleAt) / 1000;
    if (age > Math.max(2, 3 / S.rate)) setConn(false, `NOT LIVE — no data for ${age.toFixed(1)} s`);
  }, 500);

  // -------------------------------------------------------------------------------- session --
  async function start() {
    let info;
    try { info = await getJSON("/api/v1/info"); } catch (e) { setConn(false, "bridge not reachable"); setTimeout(start, 2000); return; }
    S.rate = info.live_default_hz;
    if (info.auth_required && !S.token) { showLogin(""); return; }
    try {
      S.session = await getJSON("/api/v1/session");
    } catch (e) {
      if (e.status === 401 || e.status === 403) { S.token = ""; sessionStorage.removeItem("evo-token"); showLogin(e.message); return; }
      setConn(false, "session: " + e.message); setTimeout(start, 2000); return;
    }
    S.role = S.session.role;
    setText($("#machine-name"), S.session.machine);
    document.title = S.session.machine + " — evo HMI";
    const role = $("#role");
    role.className = "badge " + (S.role === "viewer" ? "warn" : "ok");
    setText(role, S.role === "viewer" ? "VIEWER — read only" : (S.session.auth_required ? "OPERATOR" : "operator (no tokens)"));
    buildAxes();
    applyRole();
    connect();
    loadRecipes();
  }

  function showLogin(message) {
    const d = $("#login");
    setText($("#login-error"), message || "");
    if (!d.open) d.showModal();
  }
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    S.token = $("#token").value.trim();
    sessionStorage.setItem("evo-token", S.token);
    $("#login").close();
    start();
  });

  function applyRole() {
    const viewer = S.role === "viewer";
    document.body.classList.toggle("viewer", viewer);
    for (const c of $$(".cmd")) {
      c.disabled = viewer;
      if (viewer) c.title = "viewer token: commands are disabled";
    }
  }

  // ------------------------------------------------------------------------------ live feed --
  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/live");
    S.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ token: S.token || null, rate_hz: S.rate }));
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type === "sample") onSample(m);
      else if (m.type === "modules") { S.modules = m; renderModules(); renderLinks(); }
      else if (m.type === "hello") { S.retry = 0; S.rate = m.rate_hz; setConn(true, `LIVE ${m.rate_hz} Hz`); }
      else if (m.type === "rate") S.rate = m.rate_hz;
      else if (m.type === "error") {
        if (m.code === "UNAUTHENTICATED" || m.code === "PERMISSION_DENIED") { ws.onclose = null; showLogin(m.message); }
        else showResult(false, `live feed: ${m.code} — ${m.message}`);
      }
    };
    ws.onclose = () => {
      if (S.ws !== ws) return;
      setConn(false, "NOT LIVE — connection lost, reconnecting");
      S.retry += 1;
      setTimeout(connect, Math.min(5000, 300 * S.retry));
    };
  }

  function onSample(m) {
    S.sample = m;
    S.lastSampleAt = performance.now();
    if (!S.connected) setConn(true, `LIVE ${S.rate} Hz`);
    const ms = m.machine, io = m.io, rc = m.recipe;
    setSource("cu", ms.cu_ok, ms.message || "control unit not live");
    const halWhy = ms.hal_heartbeat_age_s < 0 ? "HAL not running (never seen)" : `HAL heartbeat unchanged for ${num(ms.hal_heartbeat_age_s, 1)} s`;
    setSource("hal", ms.hal_ok, halWhy);
    setSource("re", rc.re_ok, rc.message || "recipe executor not live");
    renderTop(ms);
    renderMachine(ms);
    renderAxes(ms, m.sampled_at_unix_ns / 1e9);
    renderIo(io);
    renderRecipe(rc);
    renderCycle(ms);
    renderLinks();
    if (!window.evoFirstSampleAt) window.evoFirstSampleAt = performance.now();  // page load -> first live value drawn
  }

  // ---------------------------------------------------------------------------- machine tab --
  function renderTop(ms) {
    setState($("#machine-state"), ms.machine_state);
    setState($("#safety-state"), ms.safety_state);
    const e = $("#estop-input");
    setText(e, ms.estop ? "PRESSED" : "released");
    e.className = ms.estop ? "st-bad" : "st-ok";
  }

  function renderMachine(ms) {
    setState($("#m-state"), ms.machine_state);
    setState($("#m-safety"), ms.safety_state);
    setText($("#m-estop"), ms.estop ? "PRESSED" : "released");
    setText($("#m-reduced"), yesno(ms.reduced_speed));
    setText($("#m-manual"), yesno(ms.manual_allowed));
    setText($("#m-message"), ms.message || "—");
    const items = [];
    for (const e of ms.machine_errors) items.push(`Machine: ${e.text} (${e.code})`);
    for (const a of ms.axes) {
      for (const e of a.errors) items.push(`Axis ${a.id} ${a.name}: ${e.text} (${e.code})`);
      if (a.drive_error) items.push(`Axis ${a.id} ${a.name} drive: ${a.drive_error}`);
    }
    const key = items.join("\n");
    const ul = $("#errors");
    if (ul.dataset.key !== key) {
      ul.dataset.key = key;
      ul.replaceChildren(...(items.length ? items.map((t) => el("li", { text: t })) : [el("li", { class: "none", text: "none" })]));
    }
  }

  function renderLinks() {
    const m = S.sample?.machine, r = S.sample?.recipe;
    const rows = [["Live feed (WebSocket)", S.connected, S.connected ? `${S.rate} Hz` : "disconnected"]];
    if (m) {
      rows.push(["Control unit (cu_rpc)", m.cu_ok, m.cu_ok ? `heartbeat ${num(m.cu_heartbeat_age_s * 1000, 0)} ms ago` : m.message]);
      rows.push(["HAL (hal_rpc)", m.hal_ok, m.hal_heartbeat_age_s < 0 ? "never seen" : `heartbeat ${num(m.hal_heartbeat_age_s * 1000, 0)} ms ago`]);
      rows.push(["Fieldbus driver", m.hal_ok && short(m.hal_driver_state) !== "FAULT" && short(m.hal_driver_state) !== "OFFLINE",
        `${short(m.hal_driver_state)}${m.hal_driver_message ? " — " + m.hal_driver_message : ""}`]);
    }
    if (r) rows.push(["Recipe executor (re_rpc)", r.re_ok, r.re_ok ? `heartbeat ${num(r.re_heartbeat_age_s * 1000, 0)} ms ago` : r.message]);
    if (S.modules) rows.push(["Watchdog (Supervisor)", S.modules.available, S.modules.available ? (S.modules.degraded ? "DEGRADED: a module is down" : "supervising") : S.modules.reason]);
    const tb = $("#links tbody");
    while (tb.rows.length < rows.length) tb.insertRow().append(el("td"), el("td"), el("td"));
    while (tb.rows.length > rows.length) tb.deleteRow(-1);
    rows.forEach(([name, ok, detail], i) => {
      const [c0, c1, c2] = tb.rows[i].cells;
      setText(c0, name); setText(c1, ok ? "UP" : "DOWN"); c1.className = ok ? "st-ok" : "st-bad"; setText(c2, detail || "");
    });
  }

  function renderModules() {
    const m = S.modules;
    const badge = $("#modules-badge");
    badge.hidden = m.available;
    setText(badge, m.available ? "" : "NOT LIVE: " + m.reason);
    const tb = $("#modules tbody");
    const mods = m.modules || [];
    const rows = new Map($$("tr", tb).map((tr) => [tr.dataset.module, tr]));
    for (const mod of mods) {
      let tr = rows.get(mod.name);
      if (!tr) {
        tr = el("tr", { "data-module": mod.name }, el("td", { text: mod.name }), el("td", { class: "state" }),
          el("td", { class: "pid" }), el("td", { class: "restarts" }), el("td", { class: "uptime" }), el("td", { class: "exit" }));
        tb.append(tr);
      }
      rows.delete(mod.name);
      setState($(".state", tr), mod.state);
      setText($(".pid", tr), mod.pid ? String(mod.pid) : "—");
      setText($(".restarts", tr), String(mod.restarts));
      setText($(".uptime", tr), fmtDuration(mod.uptime_s));
      setText($(".exit", tr), [mod.last_exit, mod.reason].filter(Boolean).join(" — ") || "—");
    }
    for (const tr of rows.values()) tr.remove();
    const ev = m.events || [];
    const ul = $("#module-events");
    ul.replaceChildren(...(ev.length ? ev.slice(0, 12).map((e) => el("li", {
      "data-module": e.name, "data-state": short(e.state),
      text: `${new Date(e.timestamp_unix * 1000).toLocaleTimeString()}  ${e.name}: ${short(e.previous_state)} → ${short(e.state)}${e.reason ? " (" + e.reason + ")" : ""}${e.restarts ? ", restarts " + e.restarts : ""}`,
    })) : [el("li", { class: "none", text: "none" })]));
  }

  // ------------------------------------------------------------------------------- axes tab --
  function buildAxes() {
    const box = $("#axes");
    box.replaceChildren();
    for (const a of S.session.axes) {
      const u = a.unit;
      const card = el("div", { class: "panel axis", id: `axis-${a.id}`, "data-source": "cu", "data-axis": a.id });
      const kv = (label, key, big) => el("div", { class: "kv" }, el("span", { text: label }), el("b", { class: `${key}${big ? " big-value" : ""}`, text: "—" }));
      const btn = (label, cmd, extra = "") => el("button", { class: `cmd ${extra}`, "data-cmd": cmd, text: label });
      const velDefault = Math.min(a.max_velocity, Math.max(1, Math.round(a.max_velocity * 0.1)));
      card.append(
        el("h2", {}, el("span", { text: `${a.id} · ${a.name}` }), el("span", { class: "muted", text: `${a.type}, ${u}, ${a.min_pos} … ${a.max_pos}` }), el("span", { class: "notlive-badge", hidden: "" })),
        el("div", { class: "kvs" }, kv(`Position (${u})`, "pos", true), kv(`Velocity (${u}/s)`, "vel"), kv(`Lag (${u})`, "lag"),
          kv("Torque (%)", "torque"), kv(`Target (${u})`, "target")),
        el("div", { class: "flags" }, ...["power", "motion", "mode", "ref", "inpos", "drive", "lock"].map((k) => el("span", { class: `badge f-${k}`, text: "—" }))),
        el("ul", { class: "errors axis-errors" }),
        el("div", { class: "buttons" }, btn("Enable", "enable"), btn("Disable", "disable"), btn("Home", "home"),
          btn("Jog −", "jog-neg"), btn("Jog +", "jog-pos"), btn("Stop", "stop", "danger")),
        el("div", { class: "move" },
          el("label", {}, `Position (${u})`, el("input", { class: "cmd move-pos", inputmode: "decimal", type: "text", placeholder: `${a.min_pos} … ${a.max_pos}` })),
          el("label", {}, `Velocity (${u}/s)`, el("input", { class: "cmd move-vel", inputmode: "decimal", type: "text", value: String(velDefault) })),
          el("button", { class: "cmd big move-go", "data-cmd": "move", text: "Move to" })),
        el("canvas", { class: "plot", width: "900", height: "240" }),
        el("div", { class: "legend" }, el("i"), "position", el("i"), "set-point", el("i"), `lag (right scale)`, el("span", { text: ` — last ${PLOT_S} s` })),
      );
      const legend = $$(".legend i", card);
      legend[0].className = "lg-pos"; legend[1].className = "lg-sp"; legend[2].className = "lg-lag";
      box.append(card);
      S.hist[a.id] = [];
      wireAxis(card, a);
    }
  }

  function wireAxis(card, a) {
    const label = (what) => `${what} axis ${a.id} (${a.name})`;
    const on = (cmd, fn) => $(`[data-cmd="${cmd}"]`, card).addEventListener("click", fn);
    on("enable", () => command("evo.v1.Machine/EnableAxis", { axis: a.id }, label("Enable")));
    on("disable", () => command("evo.v1.Machine/DisableAxis", { axis: a.id }, label("Disable")));
    on("home", () => command("evo.v1.Machine/Home", { axis: a.id }, label("Home")));
    on("stop", () => command("evo.v1.Machine/StopAxis", { axis: a.id }, label("Stop")));
    on("move", () => {
      const body = { axis: a.id, position: typed($(".move-pos", card).value) };
      const v = $(".move-vel", card).value;
      if (v.trim() !== "") body.velocity = typed(v);
      command("evo.v1.Machine/MoveTo", body, label("Move to"));
    });
    // Jog while held (mouse or finger); released, cancelled or left: jog stop.
    for (const [cmd, dir] of [["jog-pos", "JOG_DIRECTION_POSITIVE"], ["jog-neg", "JOG_DIRECTION_NEGATIVE"]]) {
      const b = $(`[data-cmd="${cmd}"]`, card);
      let held = false;
      b.addEventListener("pointerdown", (ev) => {
        held = true; b.setPointerCapture?.(ev.pointerId);
        const v = typed($(".move-vel", card).value);
        command("evo.v1.Machine/Jog", { axis: a.id, direction: dir, velocity: v === "" ? 0 : v }, label(cmd === "jog-pos" ? "Jog +" : "Jog −"));
      });
      const release = () => { if (!held) return; held = false; command("evo.v1.Machine/Jog", { axis: a.id, direction: "JOG_DIRECTION_STOP" }, label("Jog stop")); };
      for (const e of ["pointerup", "pointercancel", "lostpointercapture"]) b.addEventListener(e, release);
    }
  }

  function renderAxes(ms, t) {
    for (const a of ms.axes) {
      const card = $(`#axis-${a.id}`);
      if (!card) continue;
      setText($(".pos", card), num(a.position, 3));
      setText($(".vel", card), num(a.velocity, 2));
      setText($(".lag", card), num(a.lag_error, 4));
      setText($(".torque", card), num(a.torque, 1));
      setText($(".target", card), num(a.target_position, 3));
      const f = (k, text, state) => { const b = $(`.f-${k}`, card); setText(b, text); b.className = `badge f-${k} ${state}`; };
      f("power", "power " + short(a.power), short(a.power) === "MOTION" ? "ok" : short(a.power) === "POWER_ERROR" ? "bad" : "");
      f("motion", short(a.motion), /ERROR|EMERGENCY/.test(short(a.motion)) ? "bad" : "");
      f("mode", "mode " + short(a.mode), "");
      f("ref", a.referenced ? "referenced" : "not referenced", a.referenced ? "ok" : "warn");
      f("inpos", a.in_position ? "in position" : "not in position", a.in_position ? "ok" : "");
      f("drive", a.drive_fault ? "drive FAULT" : a.drive_ready ? "drive ready" : "drive not ready", a.drive_fault ? "bad" : a.drive_ready ? "ok" : "warn");
      f("lock", "lock " + short(a.lock_source), "");
      const errs = a.errors.map((e) => `${e.text} (${e.code})`).concat(a.drive_error ? [`drive: ${a.drive_error}`] : []);
      const ul = $(".axis-errors", card);
      const key = errs.join("\n");
      if (ul.dataset.key !== key) { ul.dataset.key = key; ul.replaceChildren(...errs.map((x) => el("li", { text: x }))); }
      const h = S.hist[a.id];
      if (h && ms.cu_ok) {
        h.push([t, a.position, a.setpoint_position, a.lag_error]);
        while (h.length && h[0][0] < t - PLOT_S) h.shift();
        S.dirtyPlots = true;
      }
    }
  }

  function drawPlots() {
    requestAnimationFrame(drawPlots);
    if (!S.dirtyPlots || S.tab !== "axes" || !S.session) return;
    S.dirtyPlots = false;
    for (const a of S.session.axes) {
      const c = $(`#axis-${a.id} canvas.plot`), h = S.hist[a.id];
      if (!c || !h) continue;
      const g = c.getContext("2d"), W = c.width, H = c.height, L = 70, R = 70, T = 12, B = 24;
      g.fillStyle = "#0e1318"; g.fillRect(0, 0, W, H);
      if (h.length < 2) continue;
      const t1 = h[h.length - 1][0], t0 = t1 - PLOT_S;
      let lo = Infinity, hi = -Infinity, lagMax = 1e-6;
      for (const [, p, s, l] of h) { lo = Math.min(lo, p, s); hi = Math.max(hi, p, s); lagMax = Math.max(lagMax, Math.abs(l)); }
      if (hi - lo < 1e-3) { lo -= 0.5; hi += 0.5; }
      const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
      const x = (t) => L + (W - L - R) * (t - t0) / PLOT_S;
      const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
      const yl = (v) => T + (H - T - B) * (0.5 - v / (2.2 * lagMax));
      g.strokeStyle = "#2c3744"; g.lineWidth = 1; g.font = "16px system-ui"; g.fillStyle = "#93a1b0";
      for (let i = 0; i <= 4; i++) {
        const v = lo + (hi - lo) * i / 4; g.beginPath(); g.moveTo(L, y(v)); g.lineTo(W - R, y(v)); g.stroke();
        g.fillText(v.toFixed(Math.abs(hi - lo) < 10 ? 2 : 0), 4, y(v) + 5);
      }
      g.fillText(`±${(1.1 * lagMax).toPrecision(2)}`, W - R + 4, T + 14);
      g.fillText(`-${PLOT_S} s`, L, H - 4); g.fillText("now", W - R - 30, H - 4);
      const line = (k, color, yy, dash) => {
        g.strokeStyle = color; g.lineWidth = 3; g.setLineDash(dash); g.beginPath();
        h.forEach((p, i) => (i ? g.lineTo(x(p[0]), yy(p[k])) : g.moveTo(x(p[0]), yy(p[k]))));
        g.stroke(); g.setLineDash([]);
      };
      line(3, "#f5b942", yl, []);
      line(2, "#8aa0b8", y, [8, 6]);
      line(1, "#4fc3f7", y, []);
    }
  }
  requestAnimationFrame(drawPlots);

  // -------------------------------------------------------------------------------- I/O tab --
  function renderIo(io) {
    if (!S.ioBuilt) buildIo(io);
    const upd = (id, points, fmt) => {
      const rows = $$(`#${id} tbody tr`);
      points.forEach((p, i) => { if (rows[i]) { const v = $("td.v", rows[i]); setText(v, fmt(p)); } });
    };
    upd("io-di", io.digital_inputs, (p) => (p.value ? "ON" : "off"));
    upd("io-do", io.digital_outputs, (p) => (p.value ? "ON" : "off"));
    upd("io-ai", io.analog_inputs, (p) => `${num(p.value, 2)} ${p.unit}`.trim());
    upd("io-ao", io.analog_outputs, (p) => `${num(p.value, 2)} ${p.unit}`.trim());
    io.digital_outputs.forEach((p, i) => {
      const b = $$("#io-do tbody tr")[i]?.querySelector("button");
      if (b) { setText(b, p.value ? "Switch off" : "Switch on"); b.dataset.value = p.value ? "1" : "0"; }
    });
  }

  function buildIo(io) {
    S.ioBuilt = true;
    const name = (p) => el("td", {}, el("div", { text: p.name }), el("div", { class: "muted", text: p.group }));
    const roleCell = (p) => el("td", {}, el("span", { class: "readonly", text: p.role ? `role ${p.role} (control unit)` : "—" }));
    const readonly = (p) => el("td", { class: "readonly-cell" }, el("span", { class: "readonly", text: `read-only: role ${p.role} (control unit)` }));
    $("#io-di tbody").replaceChildren(...io.digital_inputs.map((p) => el("tr", { "data-pin": p.pin }, name(p), el("td", { text: String(p.pin) }), el("td", { class: "v" }), roleCell(p))));
    $("#io-ai tbody").replaceChildren(...io.analog_inputs.map((p) => el("tr", { "data-pin": p.pin }, name(p), el("td", { text: String(p.pin) }), el("td", { class: "v" }), roleCell(p))));
    $("#io-do tbody").replaceChildren(...io.digital_outputs.map((p) => el("tr", { "data-pin": p.pin, "data-role": p.role },
      name(p), el("td", { text: String(p.pin) }), el("td", { class: "v" }),
      p.role ? readonly(p) : el("td", {}, el("button", {
        class: "cmd", "data-cmd": "set-do", text: "Switch",
        onclick: (ev) => command("evo.v1.Io/SetDigitalOutput", { pin: p.pin, value: ev.currentTarget.dataset.value !== "1" }, `Set ${p.name} (DO ${p.pin})`),
      })))));
    $("#io-ao tbody").replaceChildren(...io.analog_outputs.map((p) => {
      if (p.role) return el("tr", { "data-pin": p.pin, "data-role": p.role }, name(p), el("td", { text: String(p.pin) }), el("td", { class: "v" }), readonly(p));
      const input = el("input", { class: "cmd", inputmode: "decimal", type: "text", placeholder: `${p.min} … ${p.max} ${p.unit}` });
      return el("tr", { "data-pin": p.pin }, name(p), el("td", { text: String(p.pin) }), el("td", { class: "v" }),
        el("td", {}, input, el("button", { class: "cmd", "data-cmd": "set-ao", text: "Set",
          onclick: () => command("evo.v1.Io/SetAnalogOutput", { pin: p.pin, value: typed(input.value) }, `Set ${p.name} (AO ${p.pin})`) })));
    }));
    applyRole();
  }

  // ---------------------------------------------------------------------------- recipes tab --
  function renderRecipe(r) {
    setState($("#r-state"), r.state);
    setText($("#r-program"), r.program_name || "—");
    setText($("#r-step"), r.step_count ? `${r.current_step} / ${r.step_count}` : "—");
    setText($("#r-kind"), r.step_kind || "—");
    setText($("#r-result"), short(r.step_result));
    setText($("#r-cycles"), String(r.cycle_count));
    $("#r-progress").value = r.progress || 0;
    setText($("#r-progress-text"), `${num(r.progress, 0)} %`);
    const err = short(r.error_code) !== "OK" ? `${short(r.error_code)}: ` : "";
    setText($("#r-message"), (err + (r.message || "")) || "—");
  }

  async function loadRecipes() {
    try {
      const j = await getJSON("/api/v1/evo.v1.Recipes/ListRecipes");
      setText($("#recipes-dir"), j.directory);
      const key = JSON.stringify(j.recipes);
      if ($("#recipes tbody").dataset.key === key) return;  // unchanged: keep the rows (and a finger on them)
      $("#recipes tbody").dataset.key = key;
      $("#recipes tbody").replaceChildren(...j.recipes.map((r) => el("tr", { "data-recipe": r.name },
        el("td", { text: r.name }),
        el("td", {}, el("div", { text: r.description || "" }), r.valid ? "" : el("div", { class: "st-bad", text: r.error })),
        el("td", { text: String(r.step_count) }),
        el("td", {}, el("button", { class: "cmd", "data-cmd": "load", text: "Load",
          onclick: () => command("evo.v1.Recipes/LoadRecipe", { name: r.name }, `Load recipe ${r.name}`) })))));
      applyRole();
    } catch (e) {
      setText($("#recipes-dir"), "cannot list recipes: " + e.message);
    }
  }
  $("#recipes-refresh").addEventListener("click", loadRecipes);

  // ------------------------------------------------------------------------------ cycle tab --
  function renderCycle(ms) {
    for (const [key, c] of [["cu", ms.cu_cycle], ["hal", ms.hal_cycle]]) {
      if (!c) continue;
      const box = $(`#cycle-${key}`);
      const rows = [["Period", `${num(c.cycle_time_ns / 1000, 0)} µs`], ["Cycles", String(c.cycle_count)],
        ["Compute last / max", `${num(c.last_cycle_ns / 1000, 0)} / ${num(c.max_cycle_ns / 1000, 0)} µs`],
        ["Wake jitter last / max", `${num(c.last_wake_jitter_ns / 1000, 0)} / ${num(c.max_wake_jitter_ns / 1000, 0)} µs`],
        ["Overruns", String(c.overruns)], ["SCHED_FIFO", yesno(c.rt_active)]];
      if (box.children.length !== rows.length) box.replaceChildren(...rows.map(([k]) => el("div", { class: "kv" }, el("span", { text: k }), el("b"))));
      rows.forEach(([, v], i) => setText(box.children[i].lastChild, v));
      if (S.tab === "cycle") drawHist($(`#hist-${key}`), c.jitter_hist || [], c.jitter_bucket_us || 25);
    }
  }

  function drawHist(c, hist, bucket) {
    const g = c.getContext("2d"), W = c.width, H = c.height, L = 50, B = 34, T = 22;
    g.fillStyle = "#0e1318"; g.fillRect(0, 0, W, H);
    const total = hist.reduce((s, v) => s + v, 0);
    g.fillStyle = "#93a1b0"; g.font = "14px system-ui";
    g.fillText(`wake jitter histogram (cycles per ${bucket} µs, log scale) — ${total} cycles`, L, 15);
    if (!hist.length || !total) return;
    const maxLog = Math.log10(Math.max(...hist) + 1), bw = (W - L - 10) / hist.length;
    hist.forEach((v, i) => {
      const h = (H - B - T) * Math.log10(v + 1) / maxLog;
      g.fillStyle = i === hist.length - 1 ? "#ff5252" : "#4fc3f7";
      g.fillRect(L + i * bw + 1, H - B - h, bw - 2, h);
    });
    g.fillStyle = "#93a1b0";
    for (let i = 0; i < hist.length; i += 4) g.fillText(`${i * bucket}`, L + i * bw, H - B + 16);
    g.fillText(`≥${(hist.length - 1) * bucket} µs`, W - 80, H - B + 32);
    for (const p of [0, 1, 2, 3, 4, 5, 6]) {
      if (p > maxLog) break;
      const y = H - B - (H - B - T) * Math.log10(10 ** p + 1) / maxLog;
      g.fillText(p ? `1e${p}` : "1", 6, y + 5);
    }
  }

  // --------------------------------------------------------------------------- the controls --
  $("#estop-btn").addEventListener("click", () => command("evo.v1.Machine/EmergencyStop", { reason: "E-STOP button on the HMI" }, "E-STOP"));
  $("#reset-btn").addEventListener("click", () => command("evo.v1.Machine/ResetFaults", { axis: 0 }, "Reset"));
  for (const b of $$("[data-state]")) b.addEventListener("click", () => command("evo.v1.Machine/SetMachineState", { state: b.dataset.state }, `Machine state ${short(b.dataset.state)}`));
  $("#allow-manual").addEventListener("click", () => command("evo.v1.Machine/AllowManualMode", { allow: true }, "Allow manual mode"));
  $("#forbid-manual").addEventListener("click", () => command("evo.v1.Machine/AllowManualMode", { allow: false }, "Forbid manual mode"));
  for (const b of $$("#tab-recipes [data-method]")) b.addEventListener("click", () => command(b.dataset.method, {}, b.textContent + " recipe"));
  for (const t of $$("nav#tabs button")) {
    t.addEventListener("click", () => {
      S.tab = t.dataset.tab;
      for (const x of $$("nav#tabs button")) x.classList.toggle("active", x === t);
      for (const s of $$("section.tab")) s.hidden = s.id !== `tab-${S.tab}`;
      S.dirtyPlots = true;
      if (S.tab === "recipes") loadRecipes();
      if (S.tab === "cycle" && S.sample) renderCycle(S.sample.machine);
    });
  }
  start();
})();
