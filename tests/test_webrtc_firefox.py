"""The real room page in Firefox (headless firefox-esr, driven over Marionette).

Firefox joins as a Spanish listener through the page's form; an aiortc client then
speaks a librivox sentence in English. The page must connect, open its captions
channel, show the caption with Apertium's Spanish translation, and receive the
interpretation audio on its remote audio element. In the same session: mute (the room
stops hearing Firefox's microphone), the balance slider, caption export (SRT, WebVTT,
text; a real download), a server restart the page survives by rejoining on its own,
the phone layout, and a listen-only join. Screenshots land in the test's temporary
folder (and in ``$POLYVOX_SCREENSHOTS``).

Firefox is driven with a small Marionette client (JSON over TCP on loopback), so the
test needs no Python package beyond the suite's own; it skips only when firefox-esr
is not installed (apt install firefox-esr).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.app import interpretation_params
from pipeline.session import SessionFactory
from transports.webrtc import RoomServer, WebRTCSettings
from transports.webrtc.client import RoomClient

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        FIREFOX is None, reason="firefox-esr is not installed (apt install firefox-esr)"
    ),
]

CLIP = 1  # "he was not an ill disposed young man"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

# A fresh profile: fake media devices with no permission prompt, autoplay allowed,
# ICE on loopback with plain (not mDNS) host addresses, and every background service
# that would reach the network switched off.
PREFS: dict[str, Any] = {
    "marionette.port": 0,  # any free port; Firefox writes it to MarionetteActivePort
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    # No sound card here: without cubeb's mock backend an AudioContext never leaves
    # "suspended" (resume() never settles) and the page's mic meter stays at 0.
    "media.cubeb.force_mock_context": True,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.default_address_only": False,
    "media.peerconnection.ice.no_host": False,
    "media.peerconnection.ice.proxy_only": False,
    "media.peerconnection.use_document_iceservers": False,
    "network.proxy.type": 0,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "messaging-system.rsexperimentloader.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.default.sites": "",
    "browser.topsites.contile.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.update.enabled": False,
    "browser.search.update": False,
    "browser.search.geoip.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.aboutHomeSnippets.updateUrl": "",
    "browser.tabs.warnOnClose": False,
    "browser.urlbar.suggest.searches": False,
    "browser.discovery.enabled": False,
    "browser.contentblocking.report.lockwise.enabled": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.coverage.endpoint.base": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.pocket.enabled": False,
    "extensions.autoDisableScopes": 15,
    "services.settings.server": "http://127.0.0.1:9/remote-settings-disabled",
    "services.sync.engine.addons": False,
    "identity.fxaccounts.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.eme.enabled": False,
    "geo.provider.network.url": "",
    "geo.enabled": False,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "privacy.sanitize.sanitizeOnShutdown": False,
    "dom.disable_open_during_load": False,
    "devtools.selfxss.count": 100,
    # Downloads go straight to a folder (set per profile), no dialog.
    "browser.download.folderList": 2,
    "browser.download.useDownloadDir": True,
    "browser.download.always_ask_before_handling_new_types": False,
    "browser.download.start_downloads_in_tmp_dir": False,
    "browser.download.manager.showWhenStarting": False,
    "browser.download.alwaysOpenPanel": False,
    "browser.download.panel.shown": True,
    "browser.helperApps.neverAsk.saveToDisk": "application/x-subrip,text/vtt,text/plain",
}


def _js(value: Any) -> str:
    return json.dumps(value)


class Marionette:
    """Just enough of the Marionette protocol: ``[0, id, command, params]`` messages,
    each sent as ``<length>:<json>``, answered by ``[1, id, error, result]``."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.next_id = 0
        hello = self._receive()
        assert hello.get("applicationType") == "gecko", hello

    def _receive(self) -> Any:
        while b":" not in self.buffer:
            self._fill()
        size, _, rest = self.buffer.partition(b":")
        self.buffer = rest
        while len(self.buffer) < int(size):
            self._fill()
        body, self.buffer = self.buffer[: int(size)], self.buffer[int(size) :]
        return json.loads(body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Marionette closed the connection")
        self.buffer += chunk

    def send(self, command: str, params: dict | None = None) -> Any:
        self.next_id += 1
        body = json.dumps([0, self.next_id, command, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            kind, mid, error, result = self._receive()
            if kind == 1 and mid == self.next_id:
                break
        if error:
            raise RuntimeError(f"{command}: {error.get('error')}: {error.get('message')}")
        return result

    def script(self, body: str, *args: Any) -> Any:
        return self.send("WebDriver:ExecuteScript", {"script": body, "args": list(args)})["value"]

    def async_script(self, body: str, *args: Any) -> Any:
        """``body`` calls ``resolve`` (the last argument) with its result."""
        return self.send("WebDriver:ExecuteAsyncScript", {"script": body, "args": list(args)})[
            "value"
        ]

    def find(self, css: str) -> str:
        return self.send("WebDriver:FindElement", {"using": "css selector", "value": css})["value"][
            ELEMENT
        ]

    def click(self, css: str) -> None:
        self.send("WebDriver:ElementClick", {"id": self.find(css)})

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self.send("WebDriver:ElementClear", {"id": element})
        self.send("WebDriver:ElementSendKeys", {"id": element, "text": text})

    def keys(self, css: str, text: str) -> None:
        self.send("WebDriver:ElementSendKeys", {"id": self.find(css), "text": text})

    def screenshot(self, path: Path, full: bool = True) -> None:
        data = self.send("WebDriver:TakeScreenshot", {"full": full})["value"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.sock.close()


class Firefox:
    """Headless firefox-esr with a throwaway profile and Marionette on a free port."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        profile.mkdir(parents=True, exist_ok=True)
        self.downloads = profile / "downloads"
        self.downloads.mkdir(exist_ok=True)
        prefs = {**PREFS, "browser.download.dir": str(self.downloads)}
        (profile / "user.js").write_text(
            "".join(f"user_pref({_js(k)}, {_js(v)});\n" for k, v in prefs.items())
        )
        env = dict(os.environ, MOZ_HEADLESS="1", MOZ_CRASHREPORTER_DISABLE="1", HOME=str(profile))
        env.pop("DISPLAY", None)
        self.log = open(profile / "firefox.log", "wb")  # noqa: SIM115 - closed in quit()
        self.proc = subprocess.Popen(
            [
                FIREFOX,
                "--headless",
                "--marionette",
                "--no-remote",
                "--profile",
                str(profile),
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.marionette = self._connect(within=30.0)
        self.marionette.send(
            "WebDriver:NewSession", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}}
        )
        self.marionette.send(
            "WebDriver:SetTimeouts", {"script": 20000, "pageLoad": 20000, "implicit": 0}
        )

    def _connect(self, within: float) -> Marionette:
        active = self.profile / "MarionetteActivePort"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"firefox exited ({self.proc.returncode}): {self.log_tail()}")
            if active.exists() and active.read_text().strip():
                try:
                    return Marionette(int(active.read_text().strip()))
                except (OSError, ValueError):
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"no Marionette within {within} s: {self.log_tail()}")

    def log_tail(self) -> str:
        self.log.flush()
        return (self.profile / "firefox.log").read_text(errors="replace")[-3000:]

    def quit(self) -> None:
        try:
            self.marionette.send("Marionette:Quit", {"flags": ["eForceQuit"]})
        except Exception:
            pass
        self.marionette.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def firefox(tmp_path):
    browser = Firefox(tmp_path / "profile")
    yield browser
    browser.quit()


# Reads the page's peer connection: its state, the captions channel's, and the
# remote audio element's inbound RTP counters.
PAGE_STATE = """
const resolve = arguments[arguments.length - 1];
const s = window.polyvox;
const audio = document.getElementById("remote-audio");
const out = {
  status: s.status, statusText: document.getElementById("status").textContent, phase: s.phase,
  connection: s.pc ? s.pc.connectionState : null, ice: s.pc ? s.pc.iceConnectionState : null,
  channel: s.channel ? s.channel.readyState : null, participantId: s.participantId,
  listenOnly: s.listenOnly, reconnects: s.reconnects,
  recvonly: s.pc ? /a=recvonly/.test(s.pc.localDescription ? s.pc.localDescription.sdp : "") : null,
  audioContext: s.audioContext ? s.audioContext.state : null,
  micLevel: Number(document.getElementById("mic-level").value),
  muted: document.getElementById("mute").getAttribute("aria-pressed"),
  tracksEnabled: s.stream ? s.stream.getAudioTracks().map((t) => t.enabled) : [],
  balance: document.getElementById("balance").value,
  participants: s.participants, captions: s.captions,
  captionTexts: Array.from(document.querySelectorAll("#captions li"), (li) => li.innerText),
  audio: { hasStream: !!audio.srcObject, paused: audio.paused, currentTime: audio.currentTime,
           tracks: audio.srcObject ? audio.srcObject.getAudioTracks().map((t) => t.readyState) : [] },
  layout: { formShown: !document.getElementById("join-form").hidden,
            callHeight: document.getElementById("call").getBoundingClientRect().height,
            captionsTop: document.getElementById("captions-section").getBoundingClientRect().top,
            overflowX: document.documentElement.scrollWidth - innerWidth, viewport: [innerWidth, innerHeight] },
  inbound: null,
};
if (!s.pc) { resolve(out); return; }
s.pc.getStats().then((report) => {
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "audio") {
      out.inbound = { bytesReceived: r.bytesReceived || 0, packetsReceived: r.packetsReceived || 0,
                      audioLevel: r.audioLevel ?? null, totalAudioEnergy: r.totalAudioEnergy ?? null };
    }
  });
  resolve(out);
}, (e) => { out.statsError = String(e); resolve(out); });
"""


async def page_state(ff: Firefox) -> dict:
    return await asyncio.to_thread(ff.marionette.async_script, PAGE_STATE)


async def poll(ff: Firefox, done, within: float, what: str) -> dict:
    deadline = time.monotonic() + within
    state: dict = {}
    while time.monotonic() < deadline:
        state = await page_state(ff)
        if done(state):
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {within} s; page state {json.dumps(state)[:3000]}")


async def wait_until(predicate, within: float, what: str):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {within} s")


def in_call(state: dict) -> bool:
    return state["phase"] == "in-call" and state["connection"] == "connected" and state["channel"] == "open"


def speaking_of(client: RoomClient, pid: str, since: float = 0.0) -> list[bool]:
    """The speaking indicator of ``pid`` as ``client``'s page would show it, after ``since``."""
    return [
        m["speaking"] for m in client.messages
        if m.get("type") == "activity" and m["participant_id"] == pid and "speaking" in m and m["received_at"] > since
    ]


async def test_firefox_on_the_page_hears_an_english_speaker_in_spanish(offline, librivox, firefox, tmp_path):
    settings, engines = offline
    factory = SessionFactory(engines, interpretation_params(settings))
    webrtc = WebRTCSettings(ice_addresses=["127.0.0.1"])
    servers = [RoomServer(factory, webrtc, port=0)]
    await servers[0].start()
    try:
        await _call_in_firefox(firefox, servers, factory, webrtc, engines, librivox, tmp_path)
    finally:
        for server in servers:
            await server.stop()


async def _call_in_firefox(ff: Firefox, servers: list[RoomServer], factory, webrtc, engines, librivox, tmp_path) -> None:
    """One Firefox session through a whole call (``servers`` gets the restarted server)."""
    server = servers[0]
    mn = ff.marionette
    shots: list[Path] = []

    async def shot(name: str, full: bool = True) -> None:
        path = tmp_path / f"{name}.png"
        await asyncio.to_thread(mn.screenshot, path, full)
        shots.append(path)

    await asyncio.to_thread(mn.send, "WebDriver:Navigate", {"url": f"{server.url}/"})
    deadline = time.monotonic() + 10
    while not await asyncio.to_thread(
        mn.script, "return !!window.polyvox && document.getElementById('hears').options.length > 0"
    ):
        assert time.monotonic() < deadline, "the page did not load its languages"
        await asyncio.sleep(0.1)

    # Fill the form like a person: type name and room, pick the languages, click Join.
    await asyncio.to_thread(mn.type, "#name", "Firmin")
    await asyncio.to_thread(mn.type, "#room", "firefox")
    picked = await asyncio.to_thread(
        mn.script,
        """
        for (const [id, value] of [["speaks", arguments[0]], ["hears", arguments[1]]]) {
          const select = document.getElementById(id);
          select.value = value;
          select.dispatchEvent(new Event("change", { bubbles: true }));
        }
        return [document.getElementById("speaks").selectedOptions[0].textContent,
                document.getElementById("hears").selectedOptions[0].textContent];
        """,
        "en",
        "es",
    )
    assert picked == ["English (en)", "Spanish (es)"]
    await asyncio.to_thread(mn.click, "#join")

    joined = await poll(
        ff,
        lambda s: (s["status"] in ("ok", "error") and s["channel"] in ("open", "closed")) or s["phase"] == "idle",
        20,
        "no connection",
    )
    assert joined["status"] == "ok", joined
    assert joined["connection"] == "connected" and joined["channel"] == "open", joined
    assert joined["statusText"] == "In room firefox"
    assert not joined["layout"]["formShown"] and not joined["listenOnly"]
    # Firefox's fake microphone (a tone) moves the page's mic meter.
    metered = await poll(ff, lambda s: s["micLevel"] > 0.05, 5, "the mic meter did not move")
    assert metered["audioContext"] == "running"

    speaker = RoomClient(server.url, "firefox", name="Ann", speaks="en", hears="en")
    await speaker.join()
    await poll(ff, lambda s: len(s["participants"]) == 2, 10, "the speaker is not listed")
    before = (await page_state(ff))["inbound"] or {}
    assert (before.get("audioLevel") or 0.0) < 0.01, before  # nobody has spoken yet
    firmin = joined["participantId"]

    # Mute: the room hears Firefox's tone (Ann's page would show "speaking"), then
    # nothing while muted, then the tone again.
    await wait_until(lambda: True in speaking_of(speaker, firmin), 10, "Firefox's tone as speech")
    await asyncio.to_thread(mn.click, "#mute")
    muted_at = time.monotonic()
    muted = await page_state(ff)
    assert muted["muted"] == "true" and muted["tracksEnabled"] == [False]
    await wait_until(lambda: speaking_of(speaker, firmin)[-1] is False, 5, "silence from the muted page")
    await asyncio.sleep(2.5)
    assert True not in speaking_of(speaker, firmin, since=muted_at + 1.2)
    await asyncio.to_thread(mn.click, "#mute")
    unmuted_at = time.monotonic()
    assert (await page_state(ff))["tracksEnabled"] == [True]
    await wait_until(lambda: True in speaking_of(speaker, firmin, since=unmuted_at), 10, "the tone again")
    await asyncio.to_thread(mn.click, "#mute")  # quiet from here on: Ann's words are what counts

    # The balance slider, with the keyboard: Home = interpretation only, for this listener.
    await asyncio.to_thread(mn.keys, "#balance", "\ue011")  # Home
    room = server.rooms["firefox"]
    await wait_until(lambda: room.transport.peers[firmin].mixer.balance == 0.0, 5, "the balance at the server")
    assert room.transport.peers[speaker.participant_id].mixer.balance == 0.5

    clip = librivox[CLIP]
    speaker.mic.say(np.concatenate([np.zeros(8000, np.int16), clip.pcm, np.zeros(16000, np.int16)]))

    def anns(state: dict) -> list[dict]:
        return [
            c for c in state["captions"] if c["final"] and c["translations"] and c["name"] == "Ann"
        ]

    shown = await poll(
        ff, lambda s: bool(anns(s)), 60, "no translated caption from Ann on the page"
    )
    caption = anns(shown)[0]
    assert caption["participant_id"] == speaker.participant_id
    assert caption["language"] == "en"
    transcript = caption["text"]
    heard = set(transcript.lower().strip(".").split())
    assert len(heard & set(clip.text.split())) >= 3, (transcript, clip.text)
    (expected,) = engines.mt.translate([transcript], "en", "es")
    assert caption["translations"] == {"es": expected}
    # The page shows it: who said it, the transcript and the Spanish line.
    assert any(
        "Ann" in text and transcript in text and expected in text for text in shown["captionTexts"]
    ), shown["captionTexts"]

    # The interpretation (espeak, Spanish) plays after the caption: the remote audio
    # element's inbound RTP must grow and carry sound.
    levels = []
    deadline = time.monotonic() + 8.0
    state = shown
    while time.monotonic() < deadline:
        state = await page_state(ff)
        inbound = state["inbound"] or {}
        levels.append(inbound.get("audioLevel") or 0.0)
        if max(levels) > 0.05 and (inbound.get("totalAudioEnergy") or 0) > 0:
            break
        await asyncio.sleep(0.2)
    inbound = state["inbound"] or {}
    assert state["audio"]["hasStream"] and not state["audio"]["paused"], state["audio"]
    # The element plays: its clock moved on since joining.
    assert state["audio"]["currentTime"] > joined["audio"]["currentTime"] + 1.0, (
        joined["audio"],
        state["audio"],
    )
    assert state["audio"]["tracks"] == ["live"]
    assert inbound.get("bytesReceived", 0) > before.get("bytesReceived", 0), (before, inbound)
    assert max(levels) > 0.05, (levels, inbound)
    await shot("firefox")

    # Export: the page's SRT / WebVTT / text, and a real download of the SRT file.
    exported = await asyncio.to_thread(
        mn.script, "return ['srt', 'vtt', 'txt'].map((f) => window.polyvox.exportCaptions(f));"
    )
    srt, vtt, txt = exported
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\nAnn: ", srt), srt
    assert f"Ann: {transcript}\n(Spanish) {expected}" in srt
    assert vtt.startswith("WEBVTT\n\n") and f"<v Ann><lang es>{expected}</lang>" in vtt
    assert f"  Spanish: {expected}" in txt
    await asyncio.to_thread(mn.click, "[data-export=srt]")
    saved = await wait_until(
        lambda: [p for p in ff.downloads.glob("polyvox-firefox-*.srt") if p.stat().st_size > 0], 10, "the download"
    )
    assert saved[0].read_text(encoding="utf-8") == srt
    await asyncio.to_thread(mn.click, "#copy-captions")
    assert await asyncio.to_thread(mn.script, "return window.polyvox.copied") == txt

    # The server restarts: the page notices, says so, and rejoins with its settings.
    port = server.port
    await speaker.close()
    await server.stop()
    lost = await poll(ff, lambda s: s["phase"] == "reconnecting", 10, "the lost connection")
    assert lost["statusText"].startswith("Connection lost")
    await shot("firefox-reconnecting")
    await asyncio.sleep(1.0)
    server = RoomServer(factory, webrtc, port=port)
    servers.append(server)
    await server.start()
    back = await poll(ff, lambda s: in_call(s) and s["reconnects"] == 1, 30, "no rejoin")
    assert back["statusText"] == "Microphone muted"  # still muted, as it was
    assert back["balance"] == "0" and back["tracksEnabled"] == [False]
    room = server.rooms["firefox"]
    (rejoined,) = room.participant_ids
    assert room.room.participants[rejoined].name == "Firmin"
    assert room.transport.peers[rejoined].mixer.balance == 0.0

    # A phone-sized window (Firefox keeps windows at least 500 px wide; the page's phone
    # layout starts at 640): no join form, a compact control panel, captions on screen.
    await asyncio.to_thread(mn.send, "WebDriver:SetWindowRect", {"width": 390, "height": 844})
    phone = await poll(ff, lambda s: s["layout"]["viewport"][0] < 640, 5, "a narrow window")
    layout = phone["layout"]
    assert not layout["formShown"] and layout["overflowX"] <= 0
    assert layout["callHeight"] < 0.3 * layout["viewport"][1] and layout["captionsTop"] < 0.8 * layout["viewport"][1]
    await shot("firefox-phone", full=False)

    # Leave (at once), then join again listen-only: a receive-only offer, no mute button.
    await asyncio.to_thread(mn.click, "#leave")
    left = await page_state(ff)
    assert left["phase"] == "idle" and left["statusText"] == "Left the room" and left["layout"]["formShown"]
    await asyncio.to_thread(mn.click, "#use-mic")
    await asyncio.to_thread(mn.click, "#join")
    listening = await poll(ff, in_call, 20, "no listen-only join")
    assert listening["listenOnly"] and listening["recvonly"] and listening["statusText"] == "In room firefox"
    await shot("firefox-phone-listen-only", full=False)
    await asyncio.to_thread(mn.click, "#leave")
    await poll(ff, lambda s: s["participantId"] is None, 5, "did not leave")

    keep_screenshots(shots)


def keep_screenshots(shots: list[Path]) -> None:
    """List them, check they hold something, copy them to ``$POLYVOX_SCREENSHOTS``."""
    print("screenshots:", *shots, sep="\n  ")
    for path in shots:
        assert path.stat().st_size > 10_000
    keep = os.environ.get("POLYVOX_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, Path(keep) / path.name)
