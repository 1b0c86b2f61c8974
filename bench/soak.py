"""Soak test of the room server: N aiortc clients talking for M minutes on loopback.

Prints utterances in and out, how many got no interpretation, end of speech → first
interpreted audio at the listener (p50/p95) and the server's memory at the start and
the end (children included), so a slow leak or a stall shows. It is the WebRTC
benchmark's workload (``bench_webrtc.py``), run for long.

    .venv/bin/python bench/soak.py --clients 2 --minutes 30 [--profile offline] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_webrtc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2, help="clients (in rooms of two)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    result = asyncio.run(bench_webrtc.run(args, bench_webrtc.load_clips()))
    usage = result["usage"]
    lat = result["end_of_speech_to_first_audio_s"]
    said = result["utterances"]
    heard = said - result["missed"]
    summary = {
        "clients": result["clients"],
        "minutes": result["minutes"],
        "utterances_in": said,
        "utterances_out": heard,
        "lost": result["missed"],
        "latency_p50_s": lat["p50"],
        "latency_p95_s": lat["p95"],
        "rss_start_mib": usage[0]["server_rss_mib"] if usage else None,
        "rss_end_mib": usage[-1]["server_rss_mib"] if usage else None,
        "server_cpu_mean_pct": round(float(np.mean([s["server_cpu_pct"] for s in usage])), 1) if usage else None,
    }
    fmt = lambda v: "n/a" if v is None else f"{v:.3f} s"  # noqa: E731
    print(f"{summary['clients']} clients, {summary['minutes']} min: {said} utterances in, {heard} interpreted out, "
          f"{summary['lost']} lost; end of speech → first audio p50 {fmt(lat['p50'])}, p95 {fmt(lat['p95'])}; "
          f"server RSS {summary['rss_start_mib']} → {summary['rss_end_mib']} MiB; "
          f"server CPU mean {summary['server_cpu_mean_pct']} %")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "detail": result}, indent=2))
    return 0 if summary["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
