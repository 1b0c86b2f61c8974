import { chromium } from "playwright-core";
const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox",
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
  "--allow-loopback-in-peer-connection", "--force-webrtc-ip-handling-policy=default"] });
const log = [];
try {
  const a = await browser.newPage({ viewport: { width: 900, height: 800 } });
  a.on("console", (m) => log.push(`A ${m.type()}: ${m.text()}`)); a.on("pageerror", (e) => log.push(`A pageerror: ${e.message}`));
  await a.goto(`${url}/?room=demo`);
  await a.waitForFunction(() => document.getElementById("speaks").options.length > 0);
  await a.fill("#name", "Alice");
  await a.screenshot({ path: `${out}/0-form.png`, fullPage: true });
  await a.click("#join");
  await a.waitForFunction(() => window.polyvox.status === "ok", null, { timeout: 20000 });
  const b = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  b.on("pageerror", (e) => log.push(`B pageerror: ${e.message}`));
  await b.goto(`${url}/?room=demo`);
  await b.waitForFunction(() => document.getElementById("speaks").options.length > 0);
  await b.fill("#name", "Luis"); await b.selectOption("#speaks", "es"); await b.selectOption("#hears", "es");
  await b.uncheck("#use-mic");
  await b.click("#join");
  await b.waitForFunction(() => window.polyvox.status === "ok", null, { timeout: 20000 });
  await a.waitForTimeout(6000);
  log.push(JSON.stringify(await b.evaluate(() => ({ caps: window.polyvox.captions.length, ev: window.polyvox.events.slice(-10), sdp: window.polyvox.pc.localDescription.sdp.includes("a=recvonly") }))));
  await a.screenshot({ path: `${out}/1-alice.png`, fullPage: true });
  await b.screenshot({ path: `${out}/2-luis-phone.png`, fullPage: false });
  log.push(await b.evaluate(() => window.polyvox.exportCaptions("srt")));
  log.push(await b.evaluate(() => window.polyvox.exportCaptions("vtt")));
} catch (e) { log.push(String(e.stack || e)); }
await browser.close();
console.log(log.join("\n"));
