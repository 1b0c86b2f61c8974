"""Engines on Ray Serve, for real: one local Ray instance for this module, the offline
engines (pocketsphinx, Apertium, espeak: nothing downloaded) deployed by the real
``polyvox engines serve`` command, room servers using them through ``engines.backend:
ray`` — in this process and as ``polyvox serve`` processes behind nginx.

Covered: capabilities and results of the remote engines match the engines themselves;
streamed TTS; requests of different rooms batched on a replica; two room-server
processes behind nginx sharing one engines app, each room on exactly one of them, a
WebRTC call interpreted in each; a replica killed by its pid mid-utterance (the
utterance is retried once or dropped with a notice, the next one is interpreted); the
engines app undeployed (Ctrl-C) and deployed again (calls fail as unreachable, then work
again with the same engines); start-up errors as one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from bot.app import interpretation_params, load_engines
from bot.config import Settings, load_settings
from pipeline.engines.remote import EnginesUnreachableError
from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
from pipeline.session import SessionFactory
from tests.test_webrtc_e2e import check_speech_arrives
from transports.webrtc import RoomServer, WebRTCSettings
from transports.webrtc.client import RoomClient

pytestmark = pytest.mark.slow
pytest.importorskip("ray.serve", reason="the ray extra (ray[serve]) is not installed")

ROOT = Path(__file__).resolve().parent.parent
NGINX_EXAMPLE = ROOT / "deploy" / "nginx-rooms.conf"
APP = "polyvox-test"
#: The engines app of this module: small CPU reservations (the instance has 2 CPUs) and
#: ASR batches that wait long enough for concurrent requests to meet.
APP_SETTINGS = [
    f"engines.app_name={APP}",
    "engines.asr.num_cpus=0.25",
    "engines.mt.num_cpus=0.25",
    "engines.tts.num_cpus=0.25",
    "engines.asr.max_batch_size=4",
    "engines.asr.batch_wait_timeout_s=0.5",
]


def _sets(settings: list[str]) -> list[str]:
    return [arg for item in settings for arg in ("--set", item)]


class PolyvoxProcess:
    """A ``polyvox`` command run as ``python -m bot.cli`` from the repository, its output
    collected line by line."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, within: float) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None:
                self._reader.join(5)
                break
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {within} s; output:\n" + "\n".join(self.lines[-40:]))

    def stop(self, within: float = 60.0) -> int:
        """Ctrl-C, then wait; killed if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray instance for this module; yields its address (the GCS)."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()


def engines_serve(address: str) -> PolyvoxProcess:
    return PolyvoxProcess("engines", "serve", "--profile", "offline", "--address", address, *_sets(APP_SETTINGS))


@pytest.fixture(scope="module")
def engines_app(ray_cluster) -> Iterator[PolyvoxProcess]:
    """``polyvox engines serve`` deploying into the module's Ray instance."""
    process = engines_serve(ray_cluster)
    try:
        process.wait_for("polyvox engines: ready on the Ray cluster", 300)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def remote_settings(ray_cluster, tmp_path_factory) -> Settings:
    voices = tmp_path_factory.mktemp("voices")
    return load_settings(
        profile="offline",
        overrides=["engines.backend=ray", f"engines.address={ray_cluster}", f"voices.data_dir={voices}", *APP_SETTINGS],
    )


@pytest.fixture(scope="module")
def remote(engines_app, remote_settings):
    """This process's engines with ``backend: ray``: ASR, MT, TTS on the app."""
    engines = load_engines(remote_settings)
    yield engines
    engines.close()


def deployment(kind: str):
    from ray import serve

    return serve.get_deployment_handle(kind, app_name=APP)


def replica_stats(kind: str) -> dict:
    return deployment(kind).stats.remote().result(timeout_s=120)


async def wait_until(check: Callable[[], object], within: float, what: str) -> object:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s")


def final_caption(client: RoomClient, reference: str) -> dict | None:
    """The first translated final caption sharing three words with ``reference``."""
    for caption in client.captions:
        words = set(caption["text"].lower().strip(".?!").split())
        if caption["final"] and caption["translations"] and len(words & set(reference.split())) >= 3:
            return caption
    return None


async def check_translated(caption: dict, engines, reference: str) -> None:
    """The caption is the speaker's sentence and the MT engine's translation of it."""
    assert caption["language"] == "en"
    assert len(set(caption["text"].lower().strip(".").split()) & set(reference.split())) >= 3
    # Remote engines block: never on the event loop (Ray refuses it there).
    (expected,) = await asyncio.to_thread(engines.mt.translate, [caption["text"]], "en", "es")
    assert caption["translations"] == {"es": expected}


def padded(pcm: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(16000, np.int16)])


# -- start-up errors ----------------------------------------------------------------------


def test_an_unreachable_cluster_is_one_error_line():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--profile", "offline",
         "--set", "engines.backend=ray", "--set", f"engines.address=127.0.0.1:{port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [
        f"polyvox: error: engines.address 127.0.0.1:{port}: nothing answers there (Connection refused); "
        "start it with `polyvox engines serve` (README: Engines on a Ray cluster)"
    ]


def test_a_cluster_without_the_engines_app_is_one_error_line(ray_cluster):
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--profile", "offline", "-q",
         "--set", "engines.backend=ray", "--set", f"engines.address={ray_cluster}",
         "--set", "engines.app_name=nowhere", "--set", "engines.connect_timeout_s=60"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("polyvox: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"no engines application 'nowhere' answers on the Ray cluster at {ray_cluster}" in errors[0]
    assert "polyvox engines serve" in errors[0]


def test_voices_enroll_uses_the_engines_apps_tts(engines_app, ray_cluster, librivox, tmp_path):
    # The offline app speaks with espeak, which clones no voice: said in one line, and
    # only after asking the app (the local profile's engine is not what counts).
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "voices", "enroll", "ann", str(librivox[0].path), "--profile", "gpu",
         *_sets(["engines.backend=ray", f"engines.address={ray_cluster}", *APP_SETTINGS,
                 f"voices.data_dir={tmp_path}"])],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("polyvox: error:")]
    assert errors == ["polyvox: error: the engines app's tts engine 'espeak' cannot clone voices"]


# -- the remote engines -----------------------------------------------------------------


def test_remote_engines_are_what_the_replicas_loaded(remote):
    from pipeline.engines.asr.pocketsphinx import PocketSphinxASREngine
    from pipeline.engines.mt.apertium import ApertiumMTEngine
    from pipeline.engines.tts.espeak import EspeakTTSEngine

    mt, tts = ApertiumMTEngine(), EspeakTTSEngine()
    mt.load()
    tts.load()
    try:
        assert (remote.asr.name, remote.mt.name, remote.tts.name) == ("pocketsphinx", "apertium", "espeak")
        assert remote.asr.languages == PocketSphinxASREngine.languages
        assert remote.asr.supports_streaming == PocketSphinxASREngine.supports_streaming
        assert remote.mt.pairs() == sorted(mt.pairs())
        assert remote.tts.languages == tts.languages and remote.tts.sample_rate == tts.sample_rate
        assert remote.tts.clones_voices is False
        remote.check_languages(["en"], ["es"])
        assert "es" in remote.languages.targets("en")
        # VAD and denoise stay in the room server.
        assert type(remote.vad).__module__.startswith("pipeline.engines.vad")
    finally:
        mt.close()
        tts.close()


def test_remote_calls_give_what_the_engines_give(remote, librivox):
    from pipeline.engines.asr.pocketsphinx import PocketSphinxASREngine
    from pipeline.engines.mt.apertium import ApertiumMTEngine
    from pipeline.engines.tts.espeak import EspeakTTSEngine

    asr, mt, tts = PocketSphinxASREngine(pool_size=1, processes=False), ApertiumMTEngine(), EspeakTTSEngine()
    for engine in (asr, mt, tts):
        engine.load()
    try:
        clip = librivox[1]
        heard = remote.asr.transcribe(clip.pcm, 16000, "en")
        assert heard.text == asr.transcribe(clip.pcm, 16000, "en").text
        assert len(set(heard.text.split()) & set(clip.text.split())) >= 3
        assert remote.mt.translate([heard.text, "good morning"], "en", "es") == mt.translate(
            [heard.text, "good morning"], "en", "es"
        )
        # TTS streams: several chunks, the same audio espeak makes here.
        text = "Buenos días. ¿Cómo está usted? Hace un día muy bonito."
        chunks = list(remote.tts.synthesize(text, "es"))
        assert len(chunks) > 1
        assert np.array_equal(np.concatenate(chunks), np.concatenate(list(tts.synthesize(text, "es"))))
    finally:
        for engine in (asr, mt, tts):
            engine.close()


def test_requests_of_different_rooms_share_batches_on_the_replica(remote, librivox):
    before = replica_stats("asr")
    clips = [librivox[i].pcm for i in range(4)]
    # Four rooms' worker threads asking at once, as the processors do.
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda pcm: remote.asr.transcribe(pcm, 16000, "en").text, clips))
    after = replica_stats("asr")
    assert all(texts)
    assert after["requests"] - before["requests"] == 4
    assert after["batches"] - before["batches"] < 4  # some requests shared an engine call
    assert after["largest_batch"] >= 2


# -- rooms across processes -------------------------------------------------------------


@pytest.fixture
def nginx(tmp_path) -> Iterator[Callable[[list[int]], str]]:
    """nginx with deploy/nginx-rooms.conf in front of room servers on the given ports."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.fail("these tests need nginx (apt install nginx)")
    started: list[subprocess.Popen] = []

    def start(ports: list[int]) -> str:
        port = free_port()
        site = NGINX_EXAMPLE.read_text()
        upstream = "".join(f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in ports)
        lines = []
        for line in site.splitlines(keepends=True):
            if line.strip().startswith("server 10.0.0."):
                if upstream:
                    lines.append(upstream)
                    upstream = ""
                continue
            if line.strip() == "listen 80;":
                line = f"    listen 127.0.0.1:{port};\n"
            lines.append(line)
            if line.strip().startswith("location"):
                # Test only: say which room server answered.
                lines.append("        add_header X-Polyvox-Upstream $upstream_addr always;\n")
        (tmp_path / "polyvox.conf").write_text("".join(lines))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / "nginx.conf").write_text(
            "daemon off;\n"
            f"pid {tmp_path}/nginx.pid;\n"
            "events {}\n"
            "http {\n"
            "    access_log off;\n"
            + "".join(f"    {sub}_temp_path {tmp_path}/{sub};\n" for sub in ("fastcgi", "uwsgi", "scgi", "proxy"))
            + f"    client_body_temp_path {tmp_path}/body;\n"
            f"    include {tmp_path}/polyvox.conf;\n"
            "}\n"
        )
        proc = subprocess.Popen(
            [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        started.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        log = (tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else ""
        raise AssertionError(f"nginx did not start: {log[-2000:]}")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


async def test_two_room_server_processes_behind_nginx_share_one_engines_app(
    engines_app, ray_cluster, remote, librivox, nginx, tmp_path
):
    ports = [free_port(), free_port()]
    room_servers = [
        PolyvoxProcess(
            "serve", "--profile", "offline",
            *_sets([
                "engines.backend=ray", f"engines.address={ray_cluster}", *APP_SETTINGS,
                f"server.port={port}", "webrtc.ice_addresses=[127.0.0.1]",
                f"voices.data_dir={tmp_path / f'voices{port}'}",
            ]),
        )
        for port in ports
    ]
    clients: list[RoomClient] = []
    try:
        for server in room_servers:
            await asyncio.to_thread(server.wait_for, "polyvox: rooms at http://", 240)
        front = nginx(ports)
        # Where each room name lands: always the same server, and both servers get rooms.
        placement: dict[str, str] = {}
        async with aiohttp.ClientSession() as http:
            for i in range(12):
                for _ in range(2):
                    async with http.get(f"{front}/api/rooms/room{i}") as resp:
                        assert (await resp.json())["participants"] == []  # not open yet
                        where = resp.headers["X-Polyvox-Upstream"]
                    assert placement.setdefault(f"room{i}", where) == where
        servers = [f"127.0.0.1:{port}" for port in ports]
        assert set(placement.values()) == set(servers)
        rooms = [next(name for name, where in placement.items() if where == server) for server in servers]

        # A WebRTC call in each room, joined through nginx.
        pairs = []
        for room in rooms:
            speaker = RoomClient(front, room, name="Ann", speaks="en", hears="en")
            listener = RoomClient(front, room, name="Luis", speaks="en", hears="es")
            clients += [speaker, listener]
            await speaker.join()
            await listener.join()
            pairs.append((speaker, listener))
        for (speaker, _), clip in zip(pairs, (librivox[1], librivox[2]), strict=True):
            speaker.mic.say(padded(clip.pcm))
        for (_, listener), clip in zip(pairs, (librivox[1], librivox[2]), strict=True):
            try:
                caption = await wait_until(lambda who=listener, c=clip: final_caption(who, c.text), 120, "a caption")
            except AssertionError:
                logs = "\n".join(line for server in room_servers for line in server.lines[-30:])
                raise AssertionError(f"no caption in {listener.room}: {listener.captions}\n{logs}") from None
            assert caption["name"] == "Ann"
            await check_translated(caption, remote, clip.text)
            await check_speech_arrives(listener, caption)

        # Each room is held by exactly one room server: the one nginx chose for it.
        async with aiohttp.ClientSession() as http:
            for room, holder in zip(rooms, ports, strict=True):
                for port in ports:
                    async with http.get(f"http://127.0.0.1:{port}/api/rooms/{room}") as resp:
                        names = {p["name"] for p in (await resp.json())["participants"]}
                    assert names == ({"Ann", "Luis"} if port == holder else set())
    finally:
        for client in clients:
            await client.close()
        for server in room_servers:
            await asyncio.to_thread(server.stop)


# -- failures -----------------------------------------------------------------------------


async def test_a_replica_killed_mid_utterance_costs_at_most_that_utterance(remote, remote_settings, librivox):
    connection = remote.asr.connection
    factory = SessionFactory(remote, interpretation_params(remote_settings))
    async with RoomServer(factory, WebRTCSettings(ice_addresses=["127.0.0.1"]), port=0) as server:
        speaker = RoomClient(server.url, "kill", name="Ann", speaks="en", hears="en")
        listener = RoomClient(server.url, "kill", name="Luis", speaks="en", hears="es")
        await speaker.join()
        await listener.join()
        session = server.rooms["kill"].session
        retries = connection.retries.get("asr", 0)
        first, second = librivox[1], librivox[3]
        speaker.mic.say(padded(first.pcm))

        # The utterance reaches the ASR replica: kill the replica there, by its own pid.
        async def arrived() -> dict:
            while True:
                stats = await asyncio.to_thread(replica_stats, "asr")
                if stats["active"]:
                    return stats
                await asyncio.sleep(0.02)

        victim = await asyncio.wait_for(arrived(), 60)
        os.kill(victim["pid"], signal.SIGKILL)

        # Retried once (on the replacement replica), or dropped with a notice.
        def settled() -> bool:
            return final_caption(listener, first.text) is not None or any("asr" in e for e in session.errors)

        await wait_until(settled, 120, "the killed utterance retried or reported")
        assert connection.retries.get("asr", 0) == retries + 1
        assert session.running

        # The room keeps running: the next utterance goes to a healthy replica.
        replacement = await asyncio.to_thread(lambda: deployment("asr").info.remote().result(timeout_s=180))
        assert replacement["pid"] != victim["pid"]
        speaker.mic.say(padded(second.pcm))
        caption = await wait_until(lambda: final_caption(listener, second.text), 120, "the next caption")
        await check_translated(caption, remote, second.text)
        await speaker.leave()
        await listener.leave()


async def test_the_engines_app_undeployed_and_back(engines_app, ray_cluster, remote, remote_settings, librivox):
    clip = librivox[2]
    track = [SpeakerTrack(user_id="ann", pcm=padded(clip.pcm), language="en")]
    params = interpretation_params(remote_settings)

    # Ctrl-C on `polyvox engines serve` undeploys the app.
    assert await asyncio.to_thread(engines_app.stop) == 0
    assert any("undeployed" in line for line in engines_app.lines)
    with pytest.raises(EnginesUnreachableError) as caught:
        await asyncio.to_thread(remote.mt.translate, ["good morning"], "en", "es")
    assert caught.value.retryable
    # A session goes on, reporting what it could not interpret.
    down = await run_cascade_on_tracks(remote, track, ["es"], params=params, progress=False)
    assert not down.utterances
    assert any("cannot take asr requests now" in error for error in down.errors)

    # Deployed again: the same engines work again, nothing reconnected by hand.
    again = engines_serve(ray_cluster)
    try:
        await asyncio.to_thread(again.wait_for, "polyvox engines: ready on the Ray cluster", 300)
        back = await run_cascade_on_tracks(remote, track, ["es"], params=params, progress=False)
        assert back.utterances and not back.errors
        (utterance,) = back.utterances
        assert len(set(utterance.transcript.lower().strip(".").split()) & set(clip.text.split())) >= 3
        assert utterance.translations["es"]
    finally:
        await asyncio.to_thread(again.stop)
