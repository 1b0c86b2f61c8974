// Joins a polyvox room through the real page in headless Chromium, with a fake
// microphone playing a WAV file, stays a while, and prints what the page saw as JSON.
//
//   node join_room.mjs URL ROOM NAME SPEAKS HEARS WAV STAY_MS [SCREENSHOT.png]
//
// It leaves after STAY_MS, or as soon as the page shows a final caption with a
// translation (whichever comes first).
//
// Chromium from apt (/usr/bin/chromium, or $CHROMIUM); playwright-core drives it.
import { chromium } from "playwright-core";

const [url, room, name, speaks, hears, wav, stayMs, screenshot] = process.argv.slice(2);
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
    // Chromium leaves loopback out of ICE like aioice does; the test machine may have
    // nothing else (and tests may only use 127.0.0.1).
    "--allow-loopback-in-peer-connection",
    "--force-webrtc-ip-handling-policy=default",
  ],
});
const result = { ok: false, console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  page.on("console", (msg) => result.console.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => result.console.push(`pageerror: ${err.message}`));
  await page.goto(`${url}/?room=${encodeURIComponent(room)}`);
  await page.waitForFunction(() => document.getElementById("speaks").options.length > 0);
  await page.fill("#name", name);
  await page.selectOption("#speaks", speaks);
  await page.selectOption("#hears", hears);
  await page.click("#join");
  await page.waitForFunction(() => window.polyvox.status === "ok" || window.polyvox.status === "error", null, { timeout: 20000 });
  result.joinStatus = await page.textContent("#status");
  result.participantId = await page.evaluate(() => window.polyvox.participantId);
  const deadline = Date.now() + Number(stayMs);
  let maxLevel = 0;
  while (Date.now() < deadline) {
    const done = await page.evaluate(() =>
      window.polyvox.captions.some((c) => c.final && Object.keys(c.translations).length > 0));
    if (done) break;
    maxLevel = Math.max(maxLevel, await page.evaluate(() => Number(document.getElementById("mic-level").value)));
    await page.waitForTimeout(200);
  }
  result.maxMicLevel = maxLevel;
  result.captions = await page.evaluate(() => window.polyvox.captions);
  result.participants = await page.evaluate(() => window.polyvox.participants);
  result.captionTexts = await page.$$eval("#captions li", (items) => items.map((li) => li.innerText));
  // The consent notice shown on joining, and the voice switch applied during the call.
  result.notice = await page.textContent("#voice-notice");
  await page.uncheck("#clone-voice");
  result.voiceOffSeen = await page.waitForFunction(() => {
    const me = window.polyvox.participants.find((p) => p.id === window.polyvox.participantId);
    return me && me.voice_cloned === false;
  }, null, { timeout: 5000 }).then(() => true, () => false);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  await page.click("#leave");
  await page.waitForFunction(() => window.polyvox.participantId === null, null, { timeout: 5000 });
  result.leftStatus = await page.textContent("#status");
  result.ok = true;
} catch (error) {
  result.error = String(error && error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
