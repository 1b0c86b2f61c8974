// One headless Chromium session on the real room page, checking a call the way people
// make one (tests/test_webrtc_e2e.py runs it against a live server):
//
//   node call.mjs URL ROOM MIC.wav OUTDIR
//
// * Alice (desktop) joins with a fake microphone playing MIC.wav;
// * Luis (desktop) joins listen-only ("Use my microphone" off: a receive-only offer);
// * Mia (a phone-sized page) has no microphone at all (getUserMedia fails) and is let in
//   listen-only with a note saying why;
// then: captions (partial, then final, in reading order, with time, speaker and
// language names), speaking / interpreting indicators, the balance slider, mute (and
// the M key), caption export (copy, text, SRT, WebVTT), contrast and labels, the phone
// layout, and a server restart that every page must survive by rejoining on its own.
//
// Talks to the test over stdio: prints one JSON object per line; {"need": "restart"}
// asks the test to restart the server (it answers "restarted" on stdin), {"need":
// "inspect"} to look at the server's state (answered "ok"). The last line is
// {"result": {...}}. Screenshots and downloads go to OUTDIR.
//
// Chromium from apt (/usr/bin/chromium, or $CHROMIUM); playwright-core drives it.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, room, wav, outDir] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const pending = [];
lines.on("line", (line) => { const next = pending.shift(); if (next) next(line.trim()); });
const answer = () => new Promise((resolve) => pending.push(resolve));
const say = (message) => console.log(JSON.stringify(message));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
    "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
    // Chromium leaves loopback out of ICE like aioice does; tests may only use 127.0.0.1.
    "--allow-loopback-in-peer-connection",
    "--force-webrtc-ip-handling-policy=default",
  ],
});
const result = { ok: false, console: [], screenshots: [], downloads: {} };
const shots = async (page, name, fullPage = true) => {
  const path = `${outDir}/${name}.png`;
  await page.screenshot({ path, fullPage });
  result.screenshots.push(path);
};

// In the page: every visible text's contrast against what is behind it, and controls
// without an accessible name.
function audit() {
  const parse = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
    }
    return [255, 255, 255];
  };
  const worst = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.closest(".visually-hidden, [hidden]")) continue;
    if (el.closest("button:disabled, input:disabled, select:disabled")) continue; // WCAG exempts disabled controls
    const [a, b] = [lum(parse(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    checked += 1;
    if (ratio < 4.5) worst.push({ text: el.textContent.trim().slice(0, 40), ratio: Math.round(ratio * 100) / 100 });
  }
  const unnamed = [];
  for (const el of document.querySelectorAll("button, input, select, meter, [role=log]")) {
    if (!el.getClientRects().length) continue;
    const name = el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
      || (el.labels && el.labels.length && el.labels[0].textContent.trim()) || (el.tagName === "BUTTON" && el.textContent.trim());
    if (!name) unnamed.push(el.id || el.outerHTML.slice(0, 60));
  }
  const live = [...document.querySelectorAll("[aria-live=polite], [aria-live=assertive]")].map((el) => el.id);
  return { checked, lowContrast: worst, unnamed, live };
}

async function openPage(context, name, tag) {
  const page = await context.newPage();
  page.on("console", (msg) => { if (msg.type() !== "debug") result.console.push(`${tag} ${msg.type()}: ${msg.text()}`); });
  page.on("pageerror", (err) => result.console.push(`${tag} pageerror: ${err.message}`));
  await page.goto(`${url}/?room=${encodeURIComponent(room)}`);
  await page.waitForFunction(() => document.getElementById("speaks").options.length > 0);
  await page.fill("#name", name);
  await page.selectOption("#speaks", "en");
  return page;
}

const inCall = (page) => page.waitForFunction(
  () => window.polyvox.phase === "in-call" && window.polyvox.pc && window.polyvox.pc.connectionState === "connected"
    && window.polyvox.channel && window.polyvox.channel.readyState === "open", null, { timeout: 30000 });

try {
  // -- joining: with a microphone, listen-only by choice, listen-only for want of one --
  const desktop = { viewport: { width: 1000, height: 900 } };
  const alice = await openPage(await browser.newContext(desktop), "Alice", "A");
  await alice.selectOption("#hears", "en");
  await alice.click("#join");
  await inCall(alice);
  result.alice = await alice.evaluate(() => ({
    status: document.getElementById("status").textContent, id: window.polyvox.participantId,
    sends: window.polyvox.pc.getSenders().filter((s) => s.track).length,
  }));

  const luisContext = await browser.newContext({ ...desktop, acceptDownloads: true });
  await luisContext.grantPermissions(["clipboard-read", "clipboard-write"], { origin: url });
  const luis = await openPage(luisContext, "Luis", "L");
  await luis.selectOption("#hears", "es");
  await luis.uncheck("#use-mic");
  await luis.click("#join");
  await inCall(luis);
  result.luis = await luis.evaluate(() => ({
    status: document.getElementById("status").textContent, id: window.polyvox.participantId,
    listenOnly: window.polyvox.listenOnly, recvonly: /a=recvonly/.test(window.polyvox.pc.localDescription.sdp),
    sends: window.polyvox.pc.getSenders().filter((s) => s.track).length,
    muteShown: !document.getElementById("mute").hidden, formShown: !document.getElementById("join-form").hidden,
  }));

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Requested device not found", "NotFoundError"));
  });
  const mia = await openPage(phone, "Mia", "M");
  await mia.selectOption("#hears", "es");
  await mia.click("#join"); // "Use my microphone" stays on: there is none
  await inCall(mia);
  result.mia = await mia.evaluate(() => ({
    status: document.getElementById("status").textContent, statusKind: window.polyvox.status,
    listenOnly: window.polyvox.listenOnly, id: window.polyvox.participantId,
  }));
  say({ step: "joined" });

  // -- captions and indicators, as Luis sees them --------------------------------------
  let micMax = 0;
  const deadline = Date.now() + 90000;
  while (Date.now() < deadline) {
    micMax = Math.max(micMax, await alice.evaluate(() => Number(document.getElementById("mic-level").value)));
    const done = await luis.evaluate((aliceId) => {
      const s = window.polyvox;
      const finals = s.captions.filter((c) => c.final && c.participant_id === aliceId && c.translations.es);
      const interpreted = s.events.some((e) => e.type === "activity" && e.participant_id === aliceId && e.interpreting);
      return finals.length >= 1 && interpreted && document.querySelectorAll("#captions li").length >= 2;
    }, result.alice.id);
    if (done) break;
    await sleep(250);
  }
  result.micMax = micMax;
  Object.assign(result, await luis.evaluate(() => ({ // one moment: the messages and the list
    captions: window.polyvox.captions,
    events: window.polyvox.events.filter((e) => e.type === "activity"),
    captionItems: [...document.querySelectorAll("#captions li")].map((li) => ({
      utterance: Number(li.dataset.utterance), final: li.className === "final", time: li.querySelector("time")?.textContent,
      who: li.querySelector(".who")?.textContent,
      lines: [...li.querySelectorAll("p")].map((p) => ({
        lang: p.lang, label: p.querySelector(".lang").textContent, text: p.querySelector(".words").textContent })),
    })),
  })));
  result.participants = await luis.evaluate(() => window.polyvox.participants);
  result.notice = await luis.textContent("#voice-notice");
  result.inbound = await luis.evaluate(async () => {
    let bytes = 0;
    (await window.polyvox.pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "audio") bytes += r.bytesReceived; });
    const audio = document.getElementById("remote-audio");
    return { bytes, playing: !!audio.srcObject && !audio.paused };
  });
  result.announced = await luis.textContent("#caption-announcer");
  await shots(luis, "luis-desktop-captions");

  // The phone: the form is gone, the controls are one compact panel, captions fill the rest.
  result.phone = await mia.evaluate(() => {
    const rect = (id) => document.getElementById(id).getBoundingClientRect();
    return {
      formShown: !document.getElementById("join-form").hidden, callHeight: rect("call").height,
      captionsTop: rect("captions-section").top, viewport: [innerWidth, innerHeight],
      overflowX: document.documentElement.scrollWidth - innerWidth, captions: document.querySelectorAll("#captions li").length,
    };
  });
  result.phoneAudit = await mia.evaluate(audit);
  await shots(mia, "mia-phone", false);

  // -- the balance slider, by keyboard -------------------------------------------------
  await luis.focus("#balance");
  await luis.keyboard.press("End");
  result.balance = await luis.evaluate(() => ({
    value: document.getElementById("balance").value, text: document.getElementById("balance").getAttribute("aria-valuetext"),
  }));

  // -- mute: Alice's sound stops reaching the room, and comes back ----------------------
  await alice.click("#mute");
  const mutedAt = Date.now();
  result.mute = await alice.evaluate(() => ({
    pressed: document.getElementById("mute").getAttribute("aria-pressed"),
    enabled: window.polyvox.stream.getAudioTracks().map((t) => t.enabled), label: document.getElementById("mute").textContent,
  }));
  await sleep(7000); // longer than one loop of the recording: she would have spoken
  result.mute.speakingWhileMuted = await luis.evaluate(([aliceId, since]) => window.polyvox.events.filter(
    (e) => e.type === "activity" && e.participant_id === aliceId && e.speaking === true && e.at > since).length,
    [result.alice.id, mutedAt + 1000]);
  result.mute.meterWhileMuted = await alice.evaluate(() => Number(document.getElementById("mic-level").value));
  await shots(alice, "alice-muted");
  await alice.focus("body");
  await alice.keyboard.press("m"); // the keyboard shortcut unmutes
  const unmutedAt = Date.now();
  result.mute.unpressed = await alice.evaluate(() => document.getElementById("mute").getAttribute("aria-pressed"));
  result.mute.speakingAgain = await luis.waitForFunction(([aliceId, since]) => window.polyvox.events.some(
    (e) => e.type === "activity" && e.participant_id === aliceId && e.speaking === true && e.at > since),
    [result.alice.id, unmutedAt], { timeout: 15000 }).then(() => true, () => false);
  await alice.click("#mute"); // muted again through the restart (and less work for the server)

  // -- caption export -----------------------------------------------------------------
  for (const format of ["srt", "vtt", "txt"]) {
    const [download] = await Promise.all([luis.waitForEvent("download"), luis.click(`[data-export=${format}]`)]);
    const path = `${outDir}/captions.${format}`;
    await download.saveAs(path);
    result.downloads[format] = { path, name: download.suggestedFilename() };
  }
  await luis.click("#copy-captions");
  result.clipboard = await luis.evaluate(() => navigator.clipboard.readText());
  result.exportStatus = await luis.textContent("#status");
  result.audit = await luis.evaluate(audit);

  // -- the voice switch during the call ------------------------------------------------
  await alice.uncheck("#clone-voice");
  result.voiceOffSeen = await luis.waitForFunction((aliceId) => {
    const p = window.polyvox.participants.find((x) => x.id === aliceId);
    return p && p.voice_cloned === false;
  }, result.alice.id, { timeout: 10000 }).then(() => true, () => false);
  await alice.check("#clone-voice");

  // -- the server restarts: every page notices, says so, and comes back by itself -------
  say({ need: "restart" });
  const asked = Date.now();
  await luis.waitForFunction(() => window.polyvox.phase === "reconnecting", null, { timeout: 15000 });
  result.lost = await luis.evaluate((t) => ({
    noticedAfterMs: Date.now() - t, status: document.getElementById("status").textContent,
    participants: document.querySelectorAll("#participants li").length,
  }), asked);
  await shots(luis, "luis-reconnecting");
  if ((await answer()) !== "restarted") throw new Error("the test did not restart the server");
  const back = Date.now();
  for (const page of [alice, luis, mia]) await inCall(page);
  await luis.waitForFunction(() => window.polyvox.participants.length === 3, null, { timeout: 15000 });
  result.aliceAfter = await alice.evaluate(() => ({
    pressed: document.getElementById("mute").getAttribute("aria-pressed"),
    enabled: window.polyvox.pc.getSenders().filter((s) => s.track).map((s) => s.track.enabled),
  }));
  result.rejoined = await luis.evaluate((t) => ({
    afterMs: Date.now() - t, status: document.getElementById("status").textContent, name: window.polyvox.settings.name,
    listenOnly: window.polyvox.listenOnly, recvonly: /a=recvonly/.test(window.polyvox.pc.localDescription.sdp),
    balance: document.getElementById("balance").value, captionsKept: document.querySelectorAll("#captions li").length,
    names: window.polyvox.participants.map((p) => p.name).sort(), reconnects: window.polyvox.reconnects,
  }), back);
  await shots(luis, "luis-reconnected");
  say({ need: "inspect", luis: await luis.evaluate(() => window.polyvox.participantId) });
  await answer();

  // -- leaving is immediate ------------------------------------------------------------
  result.leave = await luis.evaluate(() => {
    document.getElementById("leave").click();
    return { phase: window.polyvox.phase, formShown: !document.getElementById("join-form").hidden,
             status: document.getElementById("status").textContent };
  });
  result.ok = true;
} catch (error) {
  result.error = String((error && error.stack) || error);
} finally {
  await browser.close();
}
say({ result });
process.exit(0);
