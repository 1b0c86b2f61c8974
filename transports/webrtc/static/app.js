// polyvox browser client: joins a room over the public signalling API (see README),
// sends the microphone (or nothing: listen-only), plays what the server mixes for this
// listener and shows captions. Plain JS, no build step; Chromium and Firefox.
//
// Messages on the "captions" data channel (README, "Signalling API"): the server sends
// caption / participants / notice / activity / pong; the page sends ping (every second),
// mix (the balance slider) and voice (the "Clone my voice" switch).
"use strict";

const FALLBACK_NAMES = {
  en: "English", es: "Spanish", fr: "French", de: "German", it: "Italian", pt: "Portuguese",
  nl: "Dutch", pl: "Polish", ru: "Russian", uk: "Ukrainian", tr: "Turkish", ar: "Arabic",
  zh: "Chinese", ja: "Japanese", ko: "Korean", hi: "Hindi", ca: "Catalan", sv: "Swedish",
};
const PING_EVERY_MS = 1000;
const CHECK_EVERY_MS = 500;
// No pong for this long, and no audio from the server either: the connection is gone
// (a ping a second, so that is noticed 2.5 to 3 s after the server went). The server
// sends audio all the time, silence included, so a busy server whose pongs are late
// still shows up as packets; it gets GIVE_UP_MS.
const LOST_AFTER_MS = 2500;
const GIVE_UP_MS = 15000;
const RETRY_MS = [1000, 1000, 2000, 3000, 5000];

const $ = (id) => document.getElementById(id);

// Exposed for automated tests and debugging.
const state = (window.polyvox = {
  phase: "idle", // idle | joining | in-call | reconnecting
  status: "idle", participantId: null, participantKey: null, room: null,
  captions: [], participants: [], activity: {}, names: { ...FALLBACK_NAMES },
  settings: null, muted: false, listenOnly: false, joinedAt: null, reconnects: 0,
  pc: null, channel: null, stream: null, meterTimer: null, audioContext: null,
  heartbeat: null, lastPong: 0, retryTimer: null, notice: null, connections: 0,
  shownLanguages: null, // caption languages this listener chose (a Set of codes)
  lostAt: null, lostNoticedAfterMs: null, events: [], packets: { count: 0, at: 0 }, slow: false,
});
// One record per utterance, in the order they started: { id, message, start, end }.
const utterances = new Map();

// -- small helpers ---------------------------------------------------------------

function languageName(code) {
  return state.names[code] || code;
}

function setStatus(text, kind) {
  state.status = kind || "info";
  const el = $("status");
  el.textContent = text;
  el.className = kind === "ok" ? "ok" : kind === "error" ? "error" : kind === "warn" ? "warn" : "";
}

function fillSelect(select, codes, preferred) {
  select.innerHTML = "";
  for (const code of codes) {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = `${languageName(code)} (${code})`;
    select.appendChild(option);
  }
  if (codes.includes(preferred)) select.value = preferred;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function sendMessage(message) {
  const channel = state.channel;
  if (channel && channel.readyState === "open") {
    try {
      channel.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }
  return false;
}

// -- languages and the form ------------------------------------------------------

async function loadLanguages() {
  const params = new URLSearchParams(location.search);
  const response = await fetch("/api/languages");
  const info = await response.json();
  Object.assign(state.names, info.names || {});
  state.available = [...new Set([...info.speaks, ...info.hears])];
  fillSelect($("speaks"), info.speaks, params.get("speaks") || localStorage.getItem("polyvox.speaks") || "en");
  const other = info.hears.find((c) => c !== $("speaks").value) || info.hears[0];
  fillSelect($("hears"), info.hears, params.get("hears") || localStorage.getItem("polyvox.hears") || other);
  $("token-row").hidden = !info.token_required;
  const features = (state.features = info.features || {});
  if (features.voice_changer) {
    for (const voice of features.voices || []) {
      const option = document.createElement("option");
      option.value = voice;
      option.textContent = `speak as: ${voice}`;
      $("changer").appendChild(option);
    }
    $("changer-row").hidden = false;
  }
  $("imagine").hidden = !features.images;
  $("room").value = params.get("room") || localStorage.getItem("polyvox.room") || "lobby";
  $("name").value = params.get("name") || localStorage.getItem("polyvox.name") || "";
  $("token").value = params.get("token") || "";
  const balance = Number(localStorage.getItem("polyvox.balance"));
  if (localStorage.getItem("polyvox.balance") !== null && balance >= 0 && balance <= 100) $("balance").value = balance;
  describeBalance();
  const saved = localStorage.getItem("polyvox.captionLanguages");
  if (saved) {
    try {
      state.shownLanguages = new Set(JSON.parse(saved));
    } catch {
      state.shownLanguages = null;
    }
  }
  renderLanguageChoice();
}

// -- caption languages -------------------------------------------------------------

function shownLanguages() {
  if (state.shownLanguages) return state.shownLanguages;
  return new Set([$("speaks").value, $("hears").value]);
}

function renderLanguageChoice() {
  const box = $("caption-language-list");
  const chosen = shownLanguages();
  const codes = [...new Set([...(state.available || []), ...state.participants.flatMap((p) => [p.speaks, p.hears])])];
  codes.sort((a, b) => languageName(a).localeCompare(languageName(b)));
  box.innerHTML = "";
  for (const code of codes) {
    const label = document.createElement("label");
    label.className = "check";
    const box2 = document.createElement("input");
    box2.type = "checkbox";
    box2.value = code;
    box2.checked = chosen.has(code);
    box2.addEventListener("change", onLanguageChoice);
    label.append(box2, ` ${languageName(code)}`);
    box.appendChild(label);
  }
}

function onLanguageChoice() {
  const codes = [...$("caption-language-list").querySelectorAll("input:checked")].map((i) => i.value);
  state.shownLanguages = new Set(codes);
  localStorage.setItem("polyvox.captionLanguages", JSON.stringify(codes));
  for (const record of utterances.values()) renderCaption(record);
}

// What of a caption this listener sees: [code, text, isOriginal] lines.
function captionLines(message) {
  const chosen = shownLanguages();
  const lines = [];
  if (chosen.has(message.language)) lines.push([message.language, message.text, true]);
  const mine = $("hears").value;
  const codes = Object.keys(message.translations || {})
    .filter((code) => chosen.has(code) && code !== message.language)
    .sort((a, b) => (a === mine ? -1 : b === mine ? 1 : a.localeCompare(b)));
  for (const code of codes) lines.push([code, message.translations[code], false]);
  // Nothing chosen matches: the original, rather than an empty caption.
  if (!lines.length) lines.push([message.language, message.text, true]);
  return lines;
}

// -- captions ----------------------------------------------------------------------

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function onCaption(message) {
  state.captions.push(message);
  // Utterance ids are the server's: a restarted server counts from 1 again, so each
  // connection keeps its own.
  const key = `${state.connections}-${message.utterance_id}`;
  let record = utterances.get(key);
  const now = new Date();
  if (!record) {
    record = { id: key, utterance: message.utterance_id, start: now, end: null, message };
    utterances.set(key, record);
  }
  record.message = message;
  if (message.final) {
    record.end = now;
    announce(message);
  }
  renderCaption(record);
}

function renderCaption(record) {
  const message = record.message;
  const list = $("captions");
  const follow = nearBottom(list);
  const id = `caption-${record.id}`;
  let item = document.getElementById(id);
  if (!item) {
    item = document.createElement("li");
    item.id = id;
    item.dataset.utterance = record.utterance;
    list.appendChild(item); // reading order: oldest first, newest last
  }
  item.className = message.final ? "final" : "interim";
  if (message.final) item.removeAttribute("aria-busy");
  else item.setAttribute("aria-busy", "true");
  item.innerHTML = "";
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = document.createElement("time");
  time.dateTime = record.start.toISOString();
  time.textContent = clock(record.start);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.participant_id === state.participantId ? `${message.name} (you)` : message.name;
  meta.append(time, who);
  if (!message.final) {
    const live = document.createElement("span");
    live.className = "live-tag";
    live.textContent = "speaking…";
    meta.appendChild(live);
  }
  item.appendChild(meta);
  for (const [code, text, original] of captionLines(message)) {
    const line = document.createElement("p");
    line.className = original ? "original" : "translation";
    line.lang = code;
    const lang = document.createElement("span");
    lang.className = "lang";
    lang.textContent = original ? `${languageName(code)}` : `${languageName(code)} (interpreted)`;
    const words = document.createElement("span");
    words.className = "words";
    words.textContent = text;
    line.append(lang, words);
    item.appendChild(line);
  }
  if (follow) list.scrollTop = list.scrollHeight;
}

// Screen readers hear finished captions once (the visible list updates in place).
function announce(message) {
  const region = $("caption-announcer");
  const lines = captionLines(message).map(([code, text]) => `${languageName(code)}: ${text}`);
  const p = document.createElement("p");
  p.textContent = `${message.name}. ${lines.join(". ")}`;
  region.appendChild(p);
  while (region.childNodes.length > 5) region.removeChild(region.firstChild);
}

// -- export ------------------------------------------------------------------------

function finished() {
  return [...utterances.values()].filter((r) => r.message.final);
}

function stamp(ms, separator) {
  const total = Math.max(0, Math.round(ms));
  const h = Math.floor(total / 3600000);
  const m = Math.floor((total % 3600000) / 60000);
  const s = Math.floor((total % 60000) / 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(total % 1000, 3)}`;
}

function cueTimes(record) {
  const origin = state.joinedAt ? state.joinedAt.getTime() : finished()[0]?.start.getTime() || 0;
  const start = record.start.getTime() - origin;
  const end = Math.max((record.end || record.start).getTime() - origin, start + 1500);
  return [start, end];
}

function escapeVtt(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// The captions as text ("txt"), SubRip ("srt") or WebVTT ("vtt"), in the languages shown.
function exportCaptions(format) {
  const records = finished();
  if (format === "txt") {
    const out = [`polyvox captions, room ${state.room || $("room").value}`, ""];
    for (const record of records) {
      const lines = captionLines(record.message);
      out.push(`[${clock(record.start)}] ${record.message.name}`);
      for (const [code, text] of lines) out.push(`  ${languageName(code)}: ${text}`);
    }
    return out.join("\n") + "\n";
  }
  if (format === "srt") {
    return records.map((record, index) => {
      const [start, end] = cueTimes(record);
      const lines = captionLines(record.message).map(([code, text], i) =>
        i === 0 ? `${record.message.name}: ${text}` : `(${languageName(code)}) ${text}`);
      return `${index + 1}\n${stamp(start, ",")} --> ${stamp(end, ",")}\n${lines.join("\n")}\n`;
    }).join("\n");
  }
  if (format === "vtt") {
    const cues = records.map((record) => {
      const [start, end] = cueTimes(record);
      const speaker = escapeVtt(record.message.name).replace(/[\r\n]/g, " ");
      const lines = captionLines(record.message).map(([code, text]) =>
        `<v ${speaker}><lang ${code}>${escapeVtt(text)}</lang>`);
      return `${record.id}\n${stamp(start, ".")} --> ${stamp(end, ".")}\n${lines.join("\n")}\n`;
    });
    return ["WEBVTT", "", ...cues].join("\n");
  }
  throw new Error(`unknown caption format ${format}`);
}
state.exportCaptions = exportCaptions;

function download(format) {
  const text = exportCaptions(format);
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  const blob = new Blob([text], { type: `${types[format]};charset=utf-8` });
  const link = document.createElement("a");
  const day = new Date().toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");
  link.href = URL.createObjectURL(blob);
  link.download = `polyvox-${state.room || "captions"}-${day}.${format}`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  setStatus(`Saved ${finished().length} captions as ${link.download}`, state.phase === "in-call" ? "ok" : "info");
}

async function copyCaptions() {
  const text = exportCaptions("txt");
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  state.copied = text;
  setStatus(`Copied ${finished().length} captions`, state.phase === "in-call" ? "ok" : "info");
}

// -- participants ----------------------------------------------------------------

function renderParticipants() {
  const list = $("participants");
  list.innerHTML = "";
  for (const p of state.participants) {
    const item = document.createElement("li");
    const act = state.activity[p.id] || {};
    item.className = [p.id === state.participantId ? "me" : "", act.speaking ? "speaking" : "",
      act.interpreting ? "interpreting" : ""].join(" ").trim();
    item.dataset.participant = p.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.id === state.participantId ? `${p.name} (you)` : p.name;
    const langs = document.createElement("span");
    langs.className = "langs";
    const via = (p.via === "phone" ? " · by phone" : "") + (p.listener ? " · listening only" : "");
    const voice = p.mode === "voice" ? ` · voice changer (${p.changer_voice || "default"})`
      : p.voice_cloned === false ? " · neutral voice" : "";
    langs.textContent = `speaks ${languageName(p.speaks)} · hears ${languageName(p.hears)}${voice}${via}`;
    item.append(name, langs);
    if (act.speaking) item.appendChild(badge("speaking", "speaking"));
    if (act.interpreting) item.appendChild(badge("interpreting", "being interpreted"));
    list.appendChild(item);
  }
}

function badge(kind, text) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  return span;
}

// A picture someone asked for ("Draw what I say"), newest first.
function renderPicture(message) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = `data:image/png;base64,${message.png_base64}`;
  img.alt = message.prompt;
  const caption = document.createElement("figcaption");
  caption.textContent = `${message.name}: ${message.caption}`;
  figure.append(img, caption);
  $("pictures").prepend(figure);
  $("pictures-section").hidden = false;
}

// -- messages ----------------------------------------------------------------------

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  if (message.type === "pong") {
    state.lastPong = Date.now();
    return;
  }
  if (message.type !== "caption") {
    // The last few hundred events, with when they came (for tests and debugging).
    state.events.push({ at: Date.now(), ...message });
    if (state.events.length > 300) state.events.splice(0, 100);
  }
  if (message.type === "caption") {
    onCaption(message);
  } else if (message.type === "notice") {
    state.notice = message.text;
    $("voice-notice").textContent = message.text;
    $("voice-notice").hidden = false;
  } else if (message.type === "image") {
    renderPicture(message);
  } else if (message.type === "participants") {
    state.participants = message.participants;
    const present = new Set(message.participants.map((p) => p.id));
    for (const id of Object.keys(state.activity)) if (!present.has(id)) delete state.activity[id];
    renderParticipants();
    renderLanguageChoice();
  } else if (message.type === "activity") {
    const act = (state.activity[message.participant_id] ||= { speaking: false, interpreting: false });
    if (typeof message.speaking === "boolean") act.speaking = message.speaking;
    if (typeof message.interpreting === "boolean") act.interpreting = message.interpreting;
    renderParticipants();
  }
}

// -- microphone --------------------------------------------------------------------

function startMeter(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  state.audioContext = context;
  state.meterTimer = setInterval(() => {
    if (state.muted) {
      $("mic-level").value = 0;
      return;
    }
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    $("mic-level").value = Math.min(1, rms * 4);
  }, 100);
}

function micProblem(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError") return "the microphone is not allowed";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "no microphone was found";
  if (name === "NotReadableError") return "the microphone is busy in another program";
  if (!navigator.mediaDevices) return "this page is not on https or localhost";
  return (error && error.message) || "the microphone did not start";
}

async function openMicrophone() {
  if (state.stream && state.stream.getAudioTracks().some((t) => t.readyState === "live")) return state.stream;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("no mediaDevices");
  state.stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
  });
  startMeter(state.stream);
  applyMute();
  return state.stream;
}

function applyMute() {
  if (state.stream) for (const track of state.stream.getAudioTracks()) track.enabled = !state.muted;
  const button = $("mute");
  button.setAttribute("aria-pressed", String(state.muted));
  button.textContent = state.muted ? "Unmute" : "Mute";
  button.classList.toggle("active", state.muted);
}

function toggleMute() {
  if (state.listenOnly) return;
  state.muted = !state.muted;
  applyMute();
  showConnected();
}

// -- joining -----------------------------------------------------------------------

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // host candidates are enough on a LAN
  });
}

class JoinRefused extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// One connection attempt with the current settings; resolves once the answer is applied.
async function connect() {
  const s = state.settings;
  const pc = (state.pc = new RTCPeerConnection({ iceServers: [] }));
  if (state.listenOnly) {
    pc.addTransceiver("audio", { direction: "recvonly" });
  } else {
    for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.stream);
  }
  const channel = (state.channel = pc.createDataChannel("captions"));
  state.connections += 1;
  channel.onmessage = onMessage;
  channel.onopen = () => {
    state.lastPong = Date.now();
    sendMessage({ type: "mix", original: Number($("balance").value) / 100 });
  };
  channel.onclose = () => { if (state.pc === pc) connectionLost("the server closed the connection"); };
  pc.ontrack = (e) => {
    const audio = $("remote-audio");
    audio.srcObject = e.streams[0] || new MediaStream([e.track]);
    audio.play().catch(() => setStatus("Click anywhere to allow audio playback", "error"));
  };
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    if (pc.connectionState === "connected" && state.phase === "in-call") {
      showConnected();
    } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      connectionLost("the connection failed");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc, 3000);
  const body = {
    sdp: pc.localDescription.sdp, type: "offer", name: s.name,
    speaks: s.speaks, hears: s.hears, clone_voice: $("clone-voice").checked,
  };
  if (state.listenOnly) body.listen_only = true;
  if ($("changer").value) Object.assign(body, { mode: "voice", voice: $("changer").value });
  if (s.token) body.token = s.token;
  const response = await fetch(`/api/rooms/${encodeURIComponent(s.room)}/join`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    // a proxy's error page: the status says enough
  }
  if (!response.ok) throw new JoinRefused(answer.error || `join failed (${response.status})`, response.status);
  if (state.pc !== pc) throw new Error("cancelled");
  state.participantId = answer.participant_id;
  state.participantKey = answer.key;
  state.room = s.room;
  // The server may let someone in to listen only (their language cannot be recognised
  // here): it says so in the answer.
  if (answer.notice && !state.micNote) state.micNote = answer.notice;
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
}

// The status once media flows: where we are, and anything to know about the microphone.
function showConnected() {
  const room = state.settings.room;
  if (state.micNote) setStatus(`In room ${room}. ${state.micNote}`, "warn");
  else if (state.muted) setStatus("Microphone muted", "warn");
  else setStatus(state.reconnects ? `Reconnected: in room ${room}` : `In room ${room}`, "ok");
}

function showCall(inCall) {
  document.body.classList.toggle("in-call", inCall);
  $("join-form").hidden = inCall;
  $("call").hidden = !inCall;
  $("join").disabled = false;
}

function describeCall() {
  const s = state.settings;
  const how = state.listenOnly ? " · listen only" : "";
  $("call-summary").textContent =
    `${s.name} in room ${s.room} · speaks ${languageName(s.speaks)} · hears ${languageName(s.hears)}${how}`;
  $("mute").hidden = state.listenOnly;
  $("imagine").disabled = state.listenOnly; // a picture of what you say needs your voice
  $("mic-box").hidden = state.listenOnly;
}

async function join(event) {
  event.preventDefault();
  if (state.phase !== "idle") return;
  const settings = {
    room: $("room").value.trim(), name: $("name").value.trim(),
    speaks: $("speaks").value, hears: $("hears").value, token: $("token").value.trim(),
    useMic: $("use-mic").checked,
  };
  state.settings = settings;
  state.phase = "joining";
  $("join").disabled = true;
  let micNote = "";
  state.micNote = null;
  state.listenOnly = !settings.useMic;
  if (settings.useMic) {
    setStatus("Starting the microphone…");
    try {
      await openMicrophone();
    } catch (error) {
      // No microphone is no reason to miss the call: listen, and say how to speak.
      state.listenOnly = true;
      micNote = `Listening only: ${micProblem(error)}. Allow the microphone and join again to speak.`;
    }
  }
  setStatus("Connecting…");
  try {
    await connect();
  } catch (error) {
    state.phase = "idle";
    setStatus(`Could not join: ${error.message}`, "error");
    teardown(true);
    $("join").disabled = false;
    return;
  }
  for (const key of ["room", "name", "speaks", "hears"]) localStorage.setItem(`polyvox.${key}`, settings[key]);
  state.phase = "in-call";
  state.joinedAt = state.joinedAt || new Date();
  state.reconnects = 0;
  describeCall();
  showCall(true);
  if (micNote) state.micNote = micNote;
  startHeartbeat();
  if (state.pc && state.pc.connectionState === "connected") showConnected();
  else setStatus(`Connecting to room ${settings.room}…`);
}

// -- connection health -------------------------------------------------------------

function startHeartbeat() {
  stopHeartbeat();
  state.lastPong = Date.now();
  state.packets = { count: 0, at: Date.now() };
  state.slow = false;
  state.lastPing = 0;
  state.heartbeat = setInterval(beat, CHECK_EVERY_MS);
}

async function beat() {
  if (state.phase !== "in-call") return;
  if (Date.now() - state.lastPing >= PING_EVERY_MS - 50) {
    state.lastPing = Date.now();
    sendMessage({ type: "ping", t: state.lastPing });
  }
  const pc = state.pc;
  const flowing = await audioArriving(pc);
  if (state.phase !== "in-call" || state.pc !== pc) return;
  const silent = Date.now() - state.lastPong;
  if (silent <= LOST_AFTER_MS) {
    if (state.slow) {
      state.slow = false;
      showConnected();
    }
  } else if (!flowing || silent > GIVE_UP_MS || (pc && pc.connectionState === "disconnected")) {
    connectionLost(flowing ? "the server stopped answering" : "nothing arrives from the server");
  } else if (!state.slow) {
    state.slow = true;
    setStatus("The server is slow to answer…", "warn");
  }
}

// Whether audio packets came from the server in the last two seconds.
async function audioArriving(pc) {
  if (!pc) return false;
  let packets = 0;
  try {
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "audio") packets += r.packetsReceived || 0;
    });
  } catch {
    return false;
  }
  const now = Date.now();
  if (packets > state.packets.count) state.packets = { count: packets, at: now };
  return now - state.packets.at < 2000;
}

function stopHeartbeat() {
  if (state.heartbeat) clearInterval(state.heartbeat);
  state.heartbeat = null;
}

function connectionLost(reason) {
  if (state.phase !== "in-call") return;
  // Tell the server we are gone if it is still there (a lost network, not a lost
  // server), so our old self does not linger in the room.
  sayGoodbye();
  state.phase = "reconnecting";
  state.lostAt = Date.now();
  state.lostNoticedAfterMs = Date.now() - state.lastPong;
  state.lostReason = reason;
  stopHeartbeat();
  closePeer();
  state.participantId = null;
  state.participants = [];
  state.activity = {};
  renderParticipants();
  document.body.classList.add("reconnecting");
  setStatus(`Connection lost (${reason}). Reconnecting…`, "error");
  scheduleRetry(0);
}

function scheduleRetry(attempt) {
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => retry(attempt), RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
}

async function retry(attempt) {
  if (state.phase !== "reconnecting") return;
  try {
    const health = await fetch("/healthz", { cache: "no-store", signal: AbortSignal.timeout(2000) });
    if (!health.ok) throw new Error(`health ${health.status}`);
    if (state.phase !== "reconnecting") return;
    setStatus("The server is back: rejoining…", "warn");
    await connect();
  } catch (error) {
    closePeer();
    if (state.phase !== "reconnecting") return;
    if (error instanceof JoinRefused && error.status >= 400 && error.status < 500 && error.status !== 429) {
      // The server answers but will not have us back (a full room, an expired token).
      state.phase = "idle";
      document.body.classList.remove("reconnecting");
      showCall(false);
      setStatus(`Could not rejoin: ${error.message}`, "error");
      return;
    }
    setStatus(`Connection lost (${state.lostReason}). Reconnecting… (attempt ${attempt + 1})`, "error");
    scheduleRetry(attempt + 1);
    return;
  }
  state.phase = "in-call";
  state.reconnects += 1;
  document.body.classList.remove("reconnecting");
  startHeartbeat();
  if (state.pc && state.pc.connectionState === "connected") showConnected();
  else setStatus("The server is back: connecting…", "warn");
}

// -- leaving -----------------------------------------------------------------------

function closePeer() {
  const pc = state.pc;
  state.pc = null;
  state.channel = null;
  if (pc) {
    try {
      pc.close();
    } catch {
      // already closed
    }
  }
}

function teardown(stopMic) {
  stopHeartbeat();
  clearTimeout(state.retryTimer);
  closePeer();
  if (stopMic) {
    if (state.meterTimer) clearInterval(state.meterTimer);
    if (state.audioContext) state.audioContext.close().catch(() => {});
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    Object.assign(state, { stream: null, meterTimer: null, audioContext: null });
    $("mic-level").value = 0;
  }
}

function sayGoodbye() {
  const { room, participantId, participantKey } = state;
  if (!room || !participantId) return;
  // In the background: the user is out at once; the server notices a dropped
  // connection anyway if this never arrives.
  fetch(`/api/rooms/${encodeURIComponent(room)}/participants/${participantId}`,
    { method: "DELETE", keepalive: true, headers: { "X-Participant-Key": participantKey } }).catch(() => {});
}

function leave() {
  sayGoodbye();
  state.phase = "idle";
  teardown(true);
  state.participantId = null;
  state.participants = [];
  state.activity = {};
  state.muted = false;
  applyMute();
  renderParticipants();
  document.body.classList.remove("reconnecting");
  showCall(false);
  setStatus("Left the room");
  $("join").focus();
}

window.addEventListener("pagehide", () => sayGoodbye());

// -- controls ----------------------------------------------------------------------

function describeBalance() {
  const value = Number($("balance").value);
  const text = value === 0 ? "interpretation only" : value === 100 ? "original voices only"
    : value === 50 ? "even" : value < 50 ? `${100 - value}% interpretation` : `${value}% original`;
  $("balance").setAttribute("aria-valuetext", text);
  return text;
}

let balanceTimer = null;
$("balance").addEventListener("input", () => {
  describeBalance();
  localStorage.setItem("polyvox.balance", $("balance").value);
  clearTimeout(balanceTimer); // at most one message per 100 ms while dragging
  balanceTimer = setTimeout(() => sendMessage({ type: "mix", original: Number($("balance").value) / 100 }), 100);
});

// The voice switch applies during the call too: off stops cloning at once and the
// server discards what it learnt of this voice.
$("clone-voice").addEventListener("change", () => {
  sendMessage({ type: "voice", clone: $("clone-voice").checked });
});

// "Draw what I say": the next sentence becomes a picture for everyone in the room.
$("imagine").addEventListener("click", () => sendMessage({ type: "imagine" }));
// The voice changer applies during the call too.
$("changer").addEventListener("change", () => {
  const voice = $("changer").value;
  sendMessage(voice ? { type: "mode", mode: "voice", voice } : { type: "mode", mode: "interpret" });
});

$("mute").addEventListener("click", toggleMute);
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest && event.target.closest("input, select, textarea");
  if (event.key.toLowerCase() === "m" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey
      && state.phase === "in-call") {
    event.preventDefault();
    toggleMute();
  }
});
$("copy-captions").addEventListener("click", copyCaptions);
for (const button of document.querySelectorAll("[data-export]")) {
  button.addEventListener("click", () => download(button.dataset.export));
}
$("speaks").addEventListener("change", renderLanguageChoice);
$("hears").addEventListener("change", renderLanguageChoice);
$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", leave);
applyMute();
loadLanguages().catch((error) => setStatus(`Server unreachable: ${error.message}`, "error"));
