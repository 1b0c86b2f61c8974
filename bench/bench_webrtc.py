"""WebRTC room benchmark: N aiortc clients on loopback speaking recorded utterances.

Starts the room server in a child process with the chosen profile's engines (its CPU and
memory, children included, are what is reported), puts the clients
in rooms of two (one English speaker hearing Spanish, talking in turn with the other),
and for M minutes measures, at the listening client, **end of speech → first
interpreted audio** (p50/p95), plus CPU and memory over time. Rooms run concurrently,
so N clients load the engines like N/2 simultaneous conversations.

The speaker's original voice is muted for listeners (``foreign_gain=0``) so the first
sound a listener hears after the speaker stops is the interpretation.

    .venv/bin/python bench/bench_webrtc.py [--clients 4] [--minutes 2] [--profile offline]
        [--set denoise.engine=rnnoise] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import interpretation_params, load_engines  # noqa: E402
from bot.config import load_settings  # noqa: E402
from pipeline.audio import load_audio  # noqa: E402
from pipeline.latency import percentile  # noqa: E402
from pipeline.session import SessionFactory  # noqa: E402
from transports.webrtc import RoomServer, WebRTCSettings  # noqa: E402
from transports.webrtc.client import RoomClient  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


class Usage:
    """CPU and memory of the server process and its children (ASR workers, espeak,
    Apertium), and of the whole machine, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.samples: list[dict[str, float]] = []
        self._last = self._read()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        return tree

    def _read(self) -> tuple[float, float, float, float, float]:
        own = 0.0
        rss = 0.0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            own += sum(int(x) for x in fields[11:15]) / self.ticks  # utime stime cutime cstime
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = cpu[3] + cpu[4]
        return time.monotonic(), own, sum(cpu) - idle, sum(cpu), rss

    def sample(self, t0: float) -> None:
        now = self._read()
        wall = now[0] - self._last[0]
        self.samples.append(
            {
                "t": round(now[0] - t0, 1),
                "server_cpu_pct": round(100 * (now[1] - self._last[1]) / wall, 1) if wall else 0.0,
                "machine_cpu_pct": round(100 * (now[2] - self._last[2]) / max(1, now[3] - self._last[3]), 1),
                "server_rss_mib": round(now[4], 1),
            }
        )
        self._last = now


def load_clips() -> list[tuple[np.ndarray, float]]:
    """The librivox utterances, each followed by 250 ms of digital silence, and for each
    the seconds of it after its last voiced 20 ms frame (its own quiet tail included), so
    that latencies count from the end of the speech itself, endpointing included."""
    clips = []
    for path in sorted(LIBRIVOX.glob("*.wav")):
        pcm = np.concatenate([load_audio(path), np.zeros(4000, np.int16)])
        frames = pcm[: len(pcm) // 320 * 320].astype(np.float64).reshape(-1, 320)
        rms = np.sqrt((frames**2).mean(axis=1))
        last_voiced = int(np.nonzero(rms > 0.1 * rms.max())[0][-1]) + 1
        clips.append((pcm, (len(pcm) - last_voiced * 320) / 16000))
    return clips


async def converse(speaker: RoomClient, listener: RoomClient, clips: list[tuple[np.ndarray, float]], until: float,
                   latencies: list[float], misses: list[int], rng: np.random.Generator,
                   overlapped: list[bool] | None = None) -> None:
    """Speaker and listener take turns: say a clip, wait for its interpretation to finish.

    A latency is the end of the clip's last voiced frame → the first interpreted sound at
    the listener after it. When the listener was already hearing this clip's
    interpretation as the speech ended (simultaneous mode interprets clauses while the
    speaker talks), ``overlapped`` gets ``True`` for it (one flag per latency).
    """
    turn = 0
    while time.monotonic() < until:
        a, b = (speaker, listener) if turn % 2 == 0 else (listener, speaker)
        clip, tail_s = clips[int(rng.integers(len(clips)))]
        said = a.mic.say(clip)
        while len(a.mic.spoken.get(said, [])) < 2:  # noqa: ASYNC110 - the track's clock decides
            await asyncio.sleep(0.02)
        ended = a.mic.spoken[said][1] - tail_s
        deadline = ended + 30
        first = None
        while time.monotonic() < deadline:
            first = b.first_sound_after(ended, threshold=300)
            if first is not None:
                break
            await asyncio.sleep(0.05)
        if first is None:
            misses.append(1)
        else:
            latencies.append(first - ended)
            if overlapped is not None:
                before = b.first_sound_after(ended - 0.2, threshold=300)
                overlapped.append(before is not None and before < ended)
            # let the interpretation play out: 0.8 s of quiet at the listener
            while time.monotonic() < deadline:
                recent = [pcm for t, pcm in b.heard if t > time.monotonic() - 0.8]
                if recent and max(float(np.abs(p).max()) for p in recent if len(p)) < 300:
                    break
                await asyncio.sleep(0.1)
        b.heard.clear()
        a.heard.clear()
        turn += 1
        await asyncio.sleep(float(rng.uniform(0.3, 1.0)))


async def serve(args: argparse.Namespace) -> None:
    """The server side (a child process of the benchmark): print its URL, serve until killed."""
    settings = load_settings(profile=args.profile, overrides=args.overrides)
    engines = load_engines(settings)
    webrtc = WebRTCSettings(ice_addresses=["127.0.0.1"], foreign_gain=0.0, max_participants=2,
                            joins_per_minute=max(30, args.clients * 2))
    try:
        factory = SessionFactory(engines, interpretation_params(settings))
        async with RoomServer(factory, webrtc, port=0) as server:
            print(json.dumps({"url": server.url, "engines": {k: settings.engine(k).engine for k in
                  ("denoise", "vad_engine", "asr", "mt", "tts")}}), flush=True)
            await asyncio.Event().wait()
    finally:
        engines.close()


async def run(args: argparse.Namespace, clips: list[np.ndarray]) -> dict:
    command = [sys.executable, __file__, "--serve", "--profile", args.profile, "--clients", str(args.clients)]
    for override in args.overrides:
        command += ["--set", override]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    info = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=120))
    latencies: list[float] = []
    overlapped: list[bool] = []
    misses: list[int] = []
    usage = Usage(proc.pid)
    try:
        pairs = []
        for i in range(max(1, args.clients // 2)):
            a = RoomClient(info["url"], f"bench{i}", name=f"a{i}", speaks="en", hears="es")
            b = RoomClient(info["url"], f"bench{i}", name=f"b{i}", speaks="en", hears="es")
            await a.join()
            await b.join()
            pairs.append((a, b))
        t0 = time.monotonic()
        until = t0 + args.minutes * 60
        rng = np.random.default_rng(7)

        async def sampler() -> None:
            while True:
                await asyncio.sleep(5)
                usage.sample(t0)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(
            *(converse(a, b, clips, until, latencies, misses, np.random.default_rng(rng.integers(1 << 30)),
                       overlapped)
              for a, b in pairs)
        )
        sampling.cancel()
        for a, b in pairs:
            await a.leave()
            await b.leave()
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "profile": args.profile,
        "overrides": args.overrides,
        "engines": info["engines"],
        "clients": len(pairs) * 2,
        "rooms": len(pairs),
        "minutes": args.minutes,
        "utterances": len(latencies) + len(misses),
        "missed": len(misses),
        "end_of_speech_to_first_audio_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies) if latencies else None,
        },
        # utterances whose interpretation was already playing when the speech ended
        "overlapped": sum(overlapped),
        "end_of_speech_to_first_audio_not_overlapped_s": {
            "p50": percentile([x for x, o in zip(latencies, overlapped, strict=True) if not o], 50),
            "p95": percentile([x for x, o in zip(latencies, overlapped, strict=True) if not o], 95),
        },
        "usage": usage.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="clients (in rooms of two)")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to talk")
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting, as on the polyvox command line (e.g. denoise.engine=rnnoise)")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server child
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    if args.serve:
        asyncio.run(serve(args))
        return
    result = asyncio.run(run(args, load_clips()))
    lat = result["end_of_speech_to_first_audio_s"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f} s"  # noqa: E731
    print(f"engines: {result['engines']}")
    print(f"{result['clients']} clients in {result['rooms']} rooms, {result['minutes']} min, "
          f"{result['utterances']} utterances ({result['missed']} without interpretation)")
    print(f"end of speech (last voiced frame) → first interpreted audio at the listener: p50 {fmt(lat['p50'])}, "
          f"p95 {fmt(lat['p95'])}, max {fmt(lat['max'])}")
    alone = result["end_of_speech_to_first_audio_not_overlapped_s"]
    print(f"  {result['overlapped']} of them already heard their interpretation as the speech ended; "
          f"the others: p50 {fmt(alone['p50'])}, p95 {fmt(alone['p95'])}")
    for s in result["usage"]:
        print(f"  t={s['t']:>6.1f} s  server CPU {s['server_cpu_pct']:>5.1f} %  "
              f"machine CPU {s['machine_cpu_pct']:>5.1f} %  server RSS {s['server_rss_mib']:>7.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
