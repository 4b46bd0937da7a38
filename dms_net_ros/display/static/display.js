// DMS-Net clinician display: renders the exams the display node sends over /ws.
// Every text from a message goes in with textContent (never innerHTML), so an exam id like
// "<script>...</script>" is shown as text. The WebSocket reconnects every second and the
// server sends its whole state first on every connection, so the page recovers when the display node restarts.
"use strict";

const EYE_LABEL = { left: "OS (left eye)", right: "OD (right eye)", both: "both eyes (OU)" };
const TOKEN = new URLSearchParams(location.search).get("token");
const TOKEN_QUERY = TOKEN ? "?token=" + encodeURIComponent(TOKEN) : "";

const view = {
  exams: new Map(),   // index -> exam
  selected: null,     // index shown, or null: follow the latest
  instance: null,     // server instance: a restarted display numbers exams from 1 again
  overlay: { left: false, right: false },
};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function $(id) { return document.getElementById(id); }

function fmt(p) { return p === null || p === undefined ? "n/a" : Number(p).toFixed(2); }
function fmtMs(ms) { return ms === null || ms === undefined ? "n/a" : Number(ms).toFixed(1); }

function verdictOf(exam) {
  if (exam.status === 2) return "error";
  if (exam.status === 1) return "retake";
  return exam.referable ? "refer" : "clear";
}

const VERDICT_WORD = { refer: "REFER", clear: "NO REFERABLE FINDING", retake: "RETAKE", error: "ERROR" };
const HISTORY_WORD = { refer: "REFER", clear: "NO FINDING", retake: "RETAKE", error: "ERROR" };

function eyeOfCode(exam, code) {
  const i = exam.positive_codes.indexOf(code);
  return i >= 0 ? exam.positive_eyes[i] || "" : "";
}

function shownExam() {
  if (view.selected !== null && view.exams.has(view.selected)) return view.exams.get(view.selected);
  let latest = null;
  for (const exam of view.exams.values()) if (!latest || exam.index > latest.index) latest = exam;
  return latest;
}

function imageUrl(exam, kind) {
  return "/api/exams/" + exam.index + "/images/" + kind + ".jpg" + TOKEN_QUERY;
}

function renderHeader(exam) {
  $("exam-id").textContent = exam ? (exam.exam_id || "(no exam id)") : "–";
  $("exam-time").textContent = exam ? (exam.time || "–") : "–";
  $("model-id").textContent = exam ? (exam.model_id || "–") : "–";
  $("backend").textContent = exam ? (exam.backend || "–") : "–";
  if (exam && exam.backend_detail) $("backend").title = exam.backend_detail;
}

function renderVerdict(exam) {
  const box = $("verdict"), items = $("verdict-items");
  items.replaceChildren();
  if (!exam) {
    box.dataset.verdict = "none";
    $("verdict-title").textContent = "Waiting for the first exam";
    $("verdict-detail").textContent = "";
    return;
  }
  const verdict = verdictOf(exam);
  box.dataset.verdict = verdict;
  $("verdict-title").textContent = VERDICT_WORD[verdict];
  if (verdict === "error") {
    $("verdict-detail").textContent = exam.status_message;
  } else if (verdict === "retake") {
    const bad = ["right", "left"].filter((e) => !exam[e + "_gradable"]).map((e) => EYE_LABEL[e]);
    $("verdict-detail").textContent = "Retake the photograph of " + (bad.length ? bad.join(" and ") : "the eye") + ": not gradable.";
    for (const reason of exam.quality_reasons) items.append(el("li", reason));
  } else {
    $("verdict-detail").textContent = exam.summary;
    exam.positive_codes.forEach((code, i) => {
      if (code === "N") return;
      const name = exam.class_names[exam.class_codes.indexOf(code)] || code;
      const eye = exam.positive_eyes[i];
      items.append(el("li", name + (eye ? " — " + EYE_LABEL[eye] : ""), "finding"));
    });
  }
}

function renderEye(exam, eye) {
  const card = $("eye-" + eye);
  const img = card.querySelector("img.photo"), caption = card.querySelector(".no-image");
  const toggle = card.querySelector(".overlay-toggle");
  const overlayKind = eye + "_attention";
  const hasPhoto = exam && exam.images.includes(eye);
  const hasOverlay = exam && exam.images.includes(overlayKind);
  const code = exam ? exam[eye + "_attention_code"] : "";
  const showOverlay = hasOverlay && view.overlay[eye];
  toggle.disabled = !hasOverlay;
  toggle.textContent = hasOverlay
    ? (showOverlay ? "Show photograph" : "Show overlay (" + (code ? "CAM of " + code : "attention") + ")")
    : "No overlay";
  const kind = showOverlay ? overlayKind : (hasPhoto ? eye : null);
  if (kind) {
    const url = imageUrl(exam, kind);
    if (img.getAttribute("src") !== url) img.src = url;
    img.hidden = false;
    caption.textContent = showOverlay ? "overlay: " + (code ? "class activation map of " + code : "attention map") : "";
    caption.hidden = !showOverlay;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
    caption.textContent = exam ? "no image received for this exam" : "no image";
    caption.hidden = false;
  }
  const quality = card.querySelector(".quality");
  if (exam) {
    const gradable = exam[eye + "_gradable"], score = exam[eye + "_quality"];
    if (score === null || score === undefined) {  // not assessed (e.g. the image never arrived)
      quality.textContent = "Quality not assessed";
      quality.dataset.gradable = "";
    } else {
      quality.textContent = "Quality " + fmt(score) + " — " + (gradable ? "gradable" : "not gradable");
      quality.dataset.gradable = gradable ? "yes" : "no";
    }
  } else {
    quality.textContent = "";
  }
  const list = card.querySelector(".top-probs");
  list.replaceChildren();
  const probs = exam ? exam[eye + "_probabilities"] : [];
  if (probs && probs.length) {
    probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3).forEach(([p, i]) => {
      const li = el("li", exam.class_names[i] + " " + fmt(p));
      const side = eyeOfCode(exam, exam.class_codes[i]);  // highlighted only where the result puts the finding
      if (side === eye || side === "both") li.className = exam.class_codes[i] === "N" ? "pos normal" : "pos";
      list.append(li);
    });
  } else if (exam) {
    list.append(el("li", exam.status === 0 ? "no per-eye probabilities (model without per-eye heads)" : "not assessed", "small"));
  }
}

function renderClasses(exam) {
  const body = document.querySelector("#class-table tbody");
  body.replaceChildren();
  if (!exam || !exam.class_codes.length) {
    const row = el("tr");
    const cell = el("td", exam ? "no probabilities: " + VERDICT_WORD[verdictOf(exam)].toLowerCase() : "no exam yet", "small");
    cell.colSpan = 6;
    row.append(cell);
    body.append(row);
  } else {
    exam.class_codes.forEach((code, i) => {
      const p = exam.probabilities[i], t = exam.thresholds[i], positive = exam.positives[i];
      const row = el("tr");
      row.dataset.code = code;
      if (positive) row.className = code === "N" ? "pos normal" : "pos";
      const bar = el("div", null, "bar");
      const fill = el("div", null, "fill");
      fill.style.width = (100 * (p || 0)).toFixed(1) + "%";
      const tick = el("div", null, "tick");
      tick.style.left = (100 * (t || 0)).toFixed(1) + "%";
      tick.title = "threshold " + fmt(t);
      bar.append(fill, tick);
      const barCell = el("td", null, "bar-col");
      barCell.append(bar);
      const eye = positive ? eyeOfCode(exam, code) : "";
      const result = positive ? "positive" + (eye ? " — " + EYE_LABEL[eye] : "") : "";
      row.append(el("td", code, "code"), el("td", exam.class_names[i]), barCell, el("td", fmt(p), "num"),
                 el("td", fmt(t), "num"), el("td", result, "result"));
      body.append(row);
    });
  }
  $("latency").textContent = exam && exam.status === 0 && exam.total_ms
    ? "Latency " + fmtMs(exam.total_ms) + " ms (preprocess " + fmtMs(exam.preprocess_ms) + ", inference " + fmtMs(exam.inference_ms) + ")"
    : "";
}

function renderHistory() {
  const list = $("history"), shown = shownExam();
  list.replaceChildren();
  const exams = [...view.exams.values()].sort((a, b) => b.index - a.index);
  for (const exam of exams) {
    const li = el("li");
    li.dataset.index = exam.index;
    li.dataset.verdict = verdictOf(exam);
    if (shown && exam.index === shown.index) li.classList.add("selected");
    const button = el("button");
    button.type = "button";
    button.append(el("span", HISTORY_WORD[verdictOf(exam)], "badge"), el("span", exam.exam_id || "(no exam id)", "hid"),
                  el("span", (exam.time || "").replace(" UTC", "").slice(11), "htime"));
    button.addEventListener("click", () => { view.selected = exam.index; view.overlay = { left: false, right: false }; render(); });
    li.append(button);
    list.append(li);
  }
  if (!exams.length) list.append(el("li", "no exams yet", "small"));
  $("follow-latest").disabled = view.selected === null;
}

const HEALTH_KEYS = [["rate_hz", "rate (Hz)"], ["latency_p50_ms", "latency p50 (ms)"], ["latency_p95_ms", "latency p95 (ms)"],
  ["drops_total", "drops"], ["images_dropped", "images dropped"], ["queue_depth", "queue"], ["backend", "backend"],
  ["results_ok", "results OK"], ["results_ungradable", "ungradable"], ["results_error", "errors"]];

function renderHealth(health) {
  const box = $("health");
  box.replaceChildren();
  if (!health || !health.length) { box.append(el("p", "no /diagnostics from the diagnosis node yet", "small")); return; }
  for (const status of health) {
    const div = el("div", null, "status");
    div.dataset.level = status.level_name;
    const head = el("p");
    head.append(el("span", status.level_name, "badge"), el("span", " " + status.message));
    const name = el("p", status.name, "sname");
    const dl = el("dl");
    for (const [key, label] of HEALTH_KEYS) {
      if (!(key in status.values)) continue;
      const row = el("div");
      row.append(el("dt", label), el("dd", status.values[key]));
      dl.append(row);
    }
    const details = el("details");
    details.append(el("summary", "all values"));
    const all = el("dl", null, "all");
    for (const [key, value] of Object.entries(status.values)) {
      const row = el("div");
      row.append(el("dt", key), el("dd", value));
      all.append(row);
    }
    details.append(all);
    div.append(head, name, dl, details, el("p", "as of " + status.time, "small"));
    box.append(div);
  }
}

function render() {
  const exam = shownExam();
  renderHeader(exam);
  renderVerdict(exam);
  renderEye(exam, "right");
  renderEye(exam, "left");
  renderClasses(exam);
  renderHistory();
}

function applyState(state) {
  const instance = state.info ? state.info.instance : null;
  if (instance !== view.instance) { view.selected = null; view.instance = instance; }
  view.history = state.info ? state.info.history : 20;
  view.exams = new Map(state.exams.map((e) => [e.index, e]));
  renderHealth(state.health);
  render();
}

function handle(message) {
  if (message.type === "state") applyState(message);
  else if (message.type === "exam") {
    const known = view.exams.has(message.exam.index);
    view.exams.set(message.exam.index, message.exam);
    const limit = view.history || 20;
    while (view.exams.size > limit) view.exams.delete(Math.min(...view.exams.keys()));
    if (!known && view.selected === null) view.overlay = { left: false, right: false };
    render();
  } else if (message.type === "health") renderHealth(message.health);
}

function setConnection(state, text) {
  const node = $("connection");
  node.dataset.state = state;
  node.textContent = text;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let ws;
  try {
    ws = new WebSocket(scheme + location.host + "/ws" + TOKEN_QUERY);
  } catch (err) {
    setTimeout(connect, 1000);
    return;
  }
  ws.onopen = () => {
    setConnection("live", "live");  // the server's first message is the whole state again
  };
  ws.onmessage = (event) => {
    try { handle(JSON.parse(event.data)); } catch (err) { console.error("bad message from the display node", err); }
  };
  ws.onclose = () => {
    setConnection("down", "display node unreachable — reconnecting…");
    setTimeout(connect, 1000);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const eye of ["left", "right"]) {
    $("eye-" + eye).querySelector(".overlay-toggle").addEventListener("click", () => {
      view.overlay[eye] = !view.overlay[eye];
      render();
    });
  }
  $("follow-latest").addEventListener("click", () => { view.selected = null; render(); });
  render();
  connect();
});
