// polyvox browser client: joins a room over the public signalling API (see README),
// sends the microphone, plays what the server mixes for this listener and shows
// captions. Plain JS, no build step; Chromium and Firefox.
"use strict";

const LANGUAGE_NAMES = {
  en: "English", es: "Spanish", fr: "French", de: "German", it: "Italian", pt: "Portuguese",
  nl: "Dutch", pl: "Polish", ru: "Russian", uk: "Ukrainian", tr: "Turkish", ar: "Arabic",
  zh: "Chinese", ja: "Japanese", ko: "Korean", hi: "Hindi", ca: "Catalan", sv: "Swedish",
};

const $ = (id) => document.getElementById(id);

// Exposed for automated tests and debugging.
const state = (window.polyvox = {
  status: "idle", participantId: null, participantKey: null, room: null, captions: [], participants: [],
  pc: null, channel: null, stream: null, meterTimer: null, audioContext: null,
});

function languageLabel(code) {
  return LANGUAGE_NAMES[code] ? `${LANGUAGE_NAMES[code]} (${code})` : code;
}

function setStatus(text, kind) {
  state.status = kind || "info";
  const el = $("status");
  el.textContent = text;
  el.className = kind === "ok" ? "ok" : kind === "error" ? "error" : "";
}

function fillSelect(select, codes, preferred) {
  select.innerHTML = "";
  for (const code of codes) {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = languageLabel(code);
    select.appendChild(option);
  }
  if (codes.includes(preferred)) select.value = preferred;
}

async function loadLanguages() {
  const params = new URLSearchParams(location.search);
  const response = await fetch("/api/languages");
  const info = await response.json();
  fillSelect($("speaks"), info.speaks, params.get("speaks") || "en");
  const other = info.hears.find((c) => c !== $("speaks").value) || info.hears[0];
  fillSelect($("hears"), info.hears, params.get("hears") || other);
  $("token-row").hidden = !info.token_required;
  const features = info.features || {};
  state.features = features;
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
}

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

function startMeter(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  state.audioContext = context;
  state.meterTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    $("mic-level").value = Math.min(1, rms * 4);
  }, 100);
}

function renderParticipants() {
  const list = $("participants");
  list.innerHTML = "";
  for (const p of state.participants) {
    const item = document.createElement("li");
    const voice = p.mode === "voice" ? ` · voice changer (${p.changer_voice || "default"})`
      : p.voice_cloned === false ? " · neutral voice" : "";
    const via = p.via === "phone" ? " · by phone" : "";
    item.textContent = `${p.name} · speaks ${p.speaks} · hears ${p.hears}${voice}${via}`;
    if (p.id === state.participantId) item.className = "me";
    list.appendChild(item);
  }
}

function renderCaption(message) {
  const id = `caption-${message.utterance_id}`;
  let item = document.getElementById(id);
  if (!item) {
    item = document.createElement("li");
    item.id = id;
    $("captions").prepend(item);
  }
  item.className = message.final ? "final" : "interim";
  item.innerHTML = "";
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.participant_id === state.participantId ? `${message.name} (you)` : message.name;
  item.appendChild(who);
  const original = document.createElement("p");
  original.className = "original";
  original.textContent = message.text;
  const lang = document.createElement("span");
  lang.className = "lang";
  lang.textContent = message.language;
  original.appendChild(lang);
  item.appendChild(original);
  const mine = $("hears").value;
  const codes = Object.keys(message.translations).sort((a, b) => (a === mine ? -1 : b === mine ? 1 : 0));
  for (const code of codes) {
    const line = document.createElement("p");
    line.className = "translation";
    line.textContent = message.translations[code];
    const tag = document.createElement("span");
    tag.className = "lang";
    tag.textContent = code;
    line.appendChild(tag);
    item.appendChild(line);
  }
}

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

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  if (message.type === "caption") {
    state.captions.push(message);
    renderCaption(message);
  } else if (message.type === "notice") {
    state.notice = message.text;
    $("voice-notice").textContent = message.text;
    $("voice-notice").hidden = false;
  } else if (message.type === "image") {
    state.images = (state.images || []).concat([message]);
    renderPicture(message);
  } else if (message.type === "participants") {
    state.participants = message.participants;
    renderParticipants();
  }
}

async function join(event) {
  event.preventDefault();
  const room = $("room").value.trim();
  const name = $("name").value.trim();
  $("join").disabled = true;
  setStatus("Starting the microphone…");
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
    startMeter(state.stream);
    const pc = (state.pc = new RTCPeerConnection({ iceServers: [] }));
    for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.stream);
    const channel = (state.channel = pc.createDataChannel("captions"));
    channel.onmessage = onMessage;
    pc.ontrack = (e) => {
      const audio = $("remote-audio");
      audio.srcObject = e.streams[0] || new MediaStream([e.track]);
      audio.play().catch(() => setStatus("Click anywhere to allow audio playback", "error"));
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") setStatus(`In room ${room}`, "ok");
      if (pc.connectionState === "failed") setStatus("Connection lost", "error");
    };
    setStatus("Connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 3000);
    const body = {
      sdp: pc.localDescription.sdp, type: "offer", name,
      speaks: $("speaks").value, hears: $("hears").value, clone_voice: $("clone-voice").checked,
    };
    if ($("changer").value) Object.assign(body, { mode: "voice", voice: $("changer").value });
    const token = $("token").value.trim();
    if (token) body.token = token;
    const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/join`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `join failed (${response.status})`);
    state.participantId = answer.participant_id;
    state.participantKey = answer.key;
    state.room = room;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    localStorage.setItem("polyvox.room", room);
    localStorage.setItem("polyvox.name", name);
    $("leave").disabled = false;
    $("imagine").disabled = false;
    for (const id of ["name", "room", "speaks", "hears", "token"]) $(id).disabled = true;
  } catch (error) {
    setStatus(`Could not join: ${error.message}`, "error");
    teardown();
    $("join").disabled = false;
  }
}

function teardown() {
  if (state.meterTimer) clearInterval(state.meterTimer);
  if (state.audioContext) state.audioContext.close();
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  if (state.pc) state.pc.close();
  Object.assign(state, { pc: null, channel: null, stream: null, meterTimer: null, audioContext: null });
  $("mic-level").value = 0;
}

async function leave() {
  const { room, participantId } = state;
  if (room && participantId) {
    try {
      await fetch(`/api/rooms/${encodeURIComponent(room)}/participants/${participantId}`,
        { method: "DELETE", headers: { "X-Participant-Key": state.participantKey } });
    } catch {
      // The server notices the closed connection anyway.
    }
  }
  teardown();
  state.participantId = null;
  state.participants = [];
  renderParticipants();
  setStatus("Left the room");
  $("leave").disabled = true;
  $("imagine").disabled = true;
  $("join").disabled = false;
  for (const id of ["name", "room", "speaks", "hears", "token"]) $(id).disabled = false;
}

window.addEventListener("pagehide", () => {
  if (state.room && state.participantId) {
    // Best effort on tab close; a dropped connection is cleaned up by the server too.
    fetch(`/api/rooms/${encodeURIComponent(state.room)}/participants/${state.participantId}`,
      { method: "DELETE", keepalive: true, headers: { "X-Participant-Key": state.participantKey } });
  }
});

// The voice switch applies during the call too: off stops cloning at once and the
// server discards what it learnt of this voice.
$("clone-voice").addEventListener("change", () => {
  const channel = state.channel;
  if (channel && channel.readyState === "open") {
    channel.send(JSON.stringify({ type: "voice", clone: $("clone-voice").checked }));
  }
});

function send(message) {
  const channel = state.channel;
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
}

// "Draw what I say": the next sentence becomes a picture for everyone in the room.
$("imagine").addEventListener("click", () => send({ type: "imagine" }));
// The voice changer applies during the call too.
$("changer").addEventListener("change", () => {
  const voice = $("changer").value;
  send(voice ? { type: "mode", mode: "voice", voice } : { type: "mode", mode: "interpret" });
});

$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", leave);
loadLanguages().catch((error) => setStatus(`Server unreachable: ${error.message}`, "error"));
