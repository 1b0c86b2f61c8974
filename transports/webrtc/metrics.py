"""Prometheus metrics of the room server, in the text exposition format.

A few histograms and gauges do not need a client library: this module keeps them and
renders ``GET /metrics``. One :class:`ServerMetrics` per server, so several servers in
one process (tests) keep separate counts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

__all__ = ["Histogram", "ServerMetrics"]

#: Latency buckets in seconds: fine below a second, where interpretation must land.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Histogram:
    """A labelled Prometheus histogram (cumulative buckets, sum, count)."""

    def __init__(self, name: str, help_text: str, label: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.buckets = tuple(sorted(buckets))
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, label_value: str, value: float) -> None:
        """Record one observation."""
        counts, total = self._series.setdefault(label_value, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def count(self, label_value: str) -> int:
        """How many observations ``label_value`` has."""
        series = self._series.get(label_value)
        return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for value, (counts, total) in sorted(self._series.items()):
            label = f'{self.label}="{_escape(value)}"'
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = "+Inf" if bound == math.inf else repr(bound)
                lines.append(f'{self.name}_bucket{{{label},le="{le}"}} {running}')
            lines.append(f"{self.name}_sum{{{label}}} {total[0]!r}")
            lines.append(f"{self.name}_count{{{label}}} {running}")
        return lines


class ServerMetrics:
    """The room server's metrics.

    Args:
        rooms: Returns the number of open rooms (read at scrape time).
        participants: Returns the number of connected participants.
        live: Returns live interpretation counters by name (speculations, ...).
    """

    def __init__(
        self,
        rooms: Callable[[], int],
        participants: Callable[[], int],
        live: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self._rooms = rooms
        self._participants = participants
        self._live = live
        self.stage_latency = Histogram(
            "polyvox_stage_latency_seconds",
            "Per-stage latency of interpreted utterances (asr, mt, tts_first, end_to_first_audio, "
            "first_audio_out, ear_voice_span; partial_caption: word spoken to shown).",
            "stage",
        )
        self.counters: dict[str, int] = {
            "polyvox_joins_total": 0,
            "polyvox_join_rejections_total": 0,
            "polyvox_utterances_total": 0,
            "polyvox_utterances_dropped_total": 0,
        }

    def inc(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def render(self) -> str:
        """The exposition text for ``GET /metrics``."""
        lines = [
            "# HELP polyvox_rooms Open WebRTC rooms.",
            "# TYPE polyvox_rooms gauge",
            f"polyvox_rooms {self._rooms()}",
            "# HELP polyvox_participants Connected WebRTC participants.",
            "# TYPE polyvox_participants gauge",
            f"polyvox_participants {self._participants()}",
        ]
        counters = dict(self.counters)
        if self._live is not None:
            counters.update({f"polyvox_{name}_total": value for name, value in self._live().items()})
        for name, value in sorted(counters.items()):
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        lines += self.stage_latency.render()
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
