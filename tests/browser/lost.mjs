// A page in headless Chromium whose server dies without a word (SIGKILL: no connection
// is closed, nothing more arrives): the page must notice from its heartbeat, say so, and
// rejoin once a server answers again (tests/test_webrtc_e2e.py runs it).
//
//   node lost.mjs URL ROOM OUTDIR
//
// Prints JSON lines: {"step": "joined"} (the test then kills the server and answers
// "killed"), {"step": "noticed", ...} (the test starts a new server and answers
// "restarted"), then {"result": {...}}.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, room, outDir] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const pending = [];
lines.on("line", (line) => { const next = pending.shift(); if (next) next(line.trim()); });
const answer = () => new Promise((resolve) => pending.push(resolve));
const say = (message) => console.log(JSON.stringify(message));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection", "--force-webrtc-ip-handling-policy=default"],
});
const result = { ok: false, console: [], screenshots: [] };
const inCall = (page) => page.waitForFunction(
  () => window.polyvox.phase === "in-call" && window.polyvox.pc && window.polyvox.pc.connectionState === "connected"
    && window.polyvox.channel && window.polyvox.channel.readyState === "open", null, { timeout: 30000 });
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  page.on("pageerror", (err) => result.console.push(`pageerror: ${err.message}`));
  await page.goto(`${url}/?room=${encodeURIComponent(room)}`);
  await page.waitForFunction(() => document.getElementById("speaks").options.length > 0);
  await page.fill("#name", "Noor");
  await page.uncheck("#use-mic");
  await page.click("#join");
  await inCall(page);
  say({ step: "joined" });
  if ((await answer()) !== "killed") throw new Error("the test did not kill the server");
  const killed = Date.now();
  await page.waitForFunction(() => window.polyvox.phase === "reconnecting", null, { timeout: 20000 });
  result.noticed = await page.evaluate((t) => ({
    afterMs: Date.now() - t, reason: window.polyvox.lostReason, status: document.getElementById("status").textContent,
  }), killed);
  const path = `${outDir}/noor-server-killed.png`;
  await page.screenshot({ path });
  result.screenshots.push(path);
  say({ step: "noticed" });
  if ((await answer()) !== "restarted") throw new Error("the test did not restart the server");
  await inCall(page);
  await page.waitForFunction(() => window.polyvox.participants.length > 0, null, { timeout: 10000 });
  result.back = await page.evaluate(() => ({
    status: document.getElementById("status").textContent, listenOnly: window.polyvox.listenOnly,
    names: window.polyvox.participants.map((p) => p.name),
  }));
  result.ok = true;
} catch (error) {
  result.error = String((error && error.stack) || error);
} finally {
  await browser.close();
}
say({ result });
process.exit(0);
