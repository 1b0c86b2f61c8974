"""Fuzz the Discord voice receiver with many datagrams and report what it made of them.

The hypothesis tests (``tests/test_discord_fuzz.py``) try a few thousand small cases in
CI; this feeds one long-lived receiver hundreds of thousands of datagrams, as a hostile
or broken peer would for hours, and prints how they were classified, the receiver's
``errors`` counter (exceptions it did not anticipate: must stay 0), the slowest single
``feed`` and the process's memory at the start and the end (must stay flat).

Kinds, in equal shares, from a seeded generator: random bytes; authentic packets
truncated, bit-flipped or extended; authentic (correctly encrypted) packets with random
Opus inside, random sequence numbers and SSRCs; a clean stream reordered, duplicated and
with sequence jumps.

    .venv/bin/python bench/fuzz_discord.py [--datagrams 200000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.discord_fakes import KEY, MODES, DiscordSender, FakeClock, encrypt_rtpsize  # noqa: E402
from tests.fakes import tone  # noqa: E402
from transports.discord.receiver import VoiceReceiver  # noqa: E402


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Counting:
    """The receiver's audio callback: counts bytes instead of keeping them."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, user_id: int, pcm: bytes) -> None:
        self.bytes += len(pcm)


def garbage_packet(rng: random.Random) -> bytes:
    sequence = rng.randrange(65536)
    header = struct.pack(
        ">BBHII", 0x80, rng.choice([120, 120, 101, 0]), sequence, rng.randrange(2**32), rng.choice([1234, 4321, 9999])
    )
    return encrypt_rtpsize(MODES[0], KEY, header, rng.randbytes(rng.randrange(0, 200)), sequence)


def damaged(rng: random.Random, clean: list[bytes]) -> bytes:
    packet = bytearray(rng.choice(clean))
    how = rng.randrange(3)
    if how == 0:
        return bytes(packet[: rng.randrange(len(packet))])
    if how == 1:
        packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
        return bytes(packet)
    return bytes(packet) + rng.randbytes(rng.randrange(1, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datagrams", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    clean = DiscordSender(MODES[0], ssrc=1234).send_pcm16k(tone(440, 2.0))  # 100 packets, sequences 0..99
    clock = FakeClock()
    sink = Counting()
    receiver = VoiceReceiver(sink, mode=MODES[0], secret_key=KEY, clock=clock)
    receiver.map_ssrc(1234, 7)
    receiver.map_ssrc(4321, 8, video_ssrc=4322)

    kinds: Counter[str] = Counter()
    slowest = 0.0
    start_rss = None
    started = time.perf_counter()
    for i in range(args.datagrams):
        kind = ("random", "damaged", "garbage_opus", "reordered")[i % 4]
        if kind == "random":
            datagram = rng.randbytes(rng.randrange(0, 400))
        elif kind == "damaged":
            datagram = damaged(rng, clean)
        elif kind == "garbage_opus":
            datagram = garbage_packet(rng)
        else:
            datagram = clean[min(len(clean) - 1, max(0, (i // 4) % len(clean) + rng.randrange(-5, 6)))]
        kinds[kind] += 1
        t0 = time.perf_counter()
        receiver.feed(datagram)
        slowest = max(slowest, time.perf_counter() - t0)
        clock.advance(0.005)
        if i % 2000 == 1999:
            receiver.flush(clock())
        if i == min(10_000, args.datagrams - 1):
            start_rss = rss_mib()  # after imports, codecs and the first buffers exist
    receiver.flush(clock.advance(2.0))
    elapsed = time.perf_counter() - started

    stats = {k: v for k, v in receiver.stats.items() if v}
    print(f"{args.datagrams} datagrams in {elapsed:.1f} s ({dict(kinds)})")
    print(f"receiver: {stats}")
    print(f"unexpected exceptions (errors): {receiver.stats['errors']}")
    print(f"slowest feed: {slowest * 1000:.2f} ms; audio delivered: {sink.bytes / 32000:.1f} s at 16 kHz")
    print(f"RSS after 10,000 datagrams {start_rss:.1f} MiB, at the end {rss_mib():.1f} MiB")
    if receiver.stats["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
