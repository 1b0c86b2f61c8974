"""What one listener hears: a mix of direct speech and interpretation, as an aiortc track.

Every listener has a :class:`ListenerMixer` fed from two kinds of sources:

* **direct** audio of every other participant, live as it arrives (at full volume when
  the speaker talks the listener's language, ducked under otherwise), capped at a short
  buffer so a late listener never falls behind the call;
* **interpretation** of other participants' utterances into the listener's language,
  played one utterance after another in order of arrival (never cut, never capped).

Each listener may move the balance between the two (:meth:`ListenerMixer.set_balance`:
the page's "original ↔ interpretation" slider).

:class:`ListenerAudioTrack` pulls 20 ms of 48 kHz mono from the mixer per frame, paced by
the wall clock, and sends silence while nothing plays.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["MIX_RATE", "FRAME_SAMPLES", "ListenerAudioTrack", "ListenerMixer"]

#: The rate everything is mixed and sent at (Opus' native rate).
MIX_RATE = 48000
#: Samples per outgoing frame: 20 ms.
FRAME_SAMPLES = MIX_RATE // 50
#: Direct audio older than this is dropped: a listener hears the call live or not at all.
MAX_DIRECT_SECONDS = 0.3


@dataclass
class _Segment:
    """One utterance's interpretation, growing as TTS chunks arrive."""

    key: Any
    chunks: deque[np.ndarray] = field(default_factory=deque)
    done: bool = False
    started: bool = False
    on_start: Callable[[], None] | None = None
    on_end: Callable[[], None] | None = None

    def end(self) -> None:
        """It will not play (any more): tell whoever heard it start."""
        callback, self.on_end = self.on_end, None
        if self.started and callback is not None:
            callback()


class ListenerMixer:
    """Mixes the sources one listener hears into 20 ms frames (not thread-safe: event loop only).

    Args:
        duck_gain: Gain of direct speech while an interpretation plays (the original
            "ducked underneath").
        foreign_gain: Gain of a speaker's original voice when it is interpreted for
            this listener (the transport passes it to :meth:`add_direct`).

    Attributes:
        duck_gain: The ducking gain now (moved by :meth:`set_balance`).
        foreign_gain: The gain of interpreted speakers' own voices now.
        interpretation_gain: The gain of interpretations now (1 unless the listener
            asked for more of the original).
        balance: The listener's balance, 0 (interpretation only) to 1 (original only);
            0.5 is the room's levels.
    """

    def __init__(self, *, duck_gain: float = 0.25, foreign_gain: float = 0.3) -> None:
        self._room_gains = (duck_gain, foreign_gain)
        self.duck_gain = duck_gain
        self.foreign_gain = foreign_gain
        self.interpretation_gain = 1.0
        self.balance = 0.5
        self._direct: dict[str, tuple[deque[np.ndarray], float]] = {}
        self._segments: deque[_Segment] = deque()
        self._open: dict[Any, _Segment] = {}

    def set_balance(self, original: float) -> None:
        """Move this listener's balance between original voices and interpretation.

        ``0`` interpretation only (interpreted speakers' own voices silent, other
        speech muted while an interpretation plays), ``0.5`` the room's levels, ``1``
        original only (no interpretation, no ducking); linear in between.

        Raises:
            ValueError: ``original`` is not a number from 0 to 1.
        """
        if not isinstance(original, int | float) or isinstance(original, bool) or not 0.0 <= original <= 1.0:
            raise ValueError(f"balance must be from 0 to 1, got {original!r}")
        duck, foreign = self._room_gains
        if original <= 0.5:
            share = original / 0.5
            self.duck_gain, self.foreign_gain, self.interpretation_gain = duck * share, foreign * share, 1.0
        else:
            share = (original - 0.5) / 0.5
            self.duck_gain = duck + (1.0 - duck) * share
            self.foreign_gain = foreign + (1.0 - foreign) * share
            self.interpretation_gain = 1.0 - share
        self.balance = float(original)

    # -- feeding ------------------------------------------------------------------

    def add_direct(self, source: str, pcm: np.ndarray, gain: float) -> None:
        """Live audio (48 kHz mono int16) of participant ``source`` at ``gain``."""
        if gain <= 0.0 or not len(pcm):
            return
        queue, _ = self._direct.get(source, (deque(), gain))
        queue.append(pcm)
        held = sum(len(p) for p in queue)
        while held > MAX_DIRECT_SECONDS * MIX_RATE and len(queue) > 1:
            held -= len(queue.popleft())
        self._direct[source] = (queue, gain)

    def add_interpretation(
        self,
        key: Any,
        pcm: np.ndarray,
        *,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """A chunk (48 kHz mono int16) of the interpretation ``key`` (utterance, language).

        ``on_start`` is called when it starts playing, ``on_end`` when it has played out
        (or was cut, or the mixer closed) after starting.
        """
        segment = self._open.get(key)
        if segment is None:
            segment = self._open[key] = _Segment(key, on_start=on_start, on_end=on_end)
            self._segments.append(segment)
        if len(pcm):
            segment.chunks.append(pcm)

    def finish_interpretation(self, key: Any) -> None:
        """No more chunks will come for ``key``."""
        segment = self._open.pop(key, None)
        if segment is not None:
            segment.done = True

    def cut_interpretation(self, key: Any) -> bool:
        """Drop what is left of interpretation ``key`` (it ended in an error).

        Returns:
            Whether any of it had started playing (a connection that buffers audio
            ahead then has some to drop too).
        """
        self._open.pop(key, None)
        started = False
        for queued in [s for s in self._segments if s.key == key]:
            started = started or queued.started
            queued.chunks.clear()
            queued.done = True
            queued.end()
        return started

    def close(self) -> None:
        """The listener left: nothing more plays (interpretations that started end)."""
        for segment in self._segments:
            segment.end()
        self._segments.clear()
        self._open.clear()
        self._direct.clear()

    def remove_source(self, source: str) -> None:
        """Forget a participant's direct audio (they left)."""
        self._direct.pop(source, None)

    @property
    def playing(self) -> Any | None:
        """The key of the interpretation being heard now, if one has started."""
        head = self._segments[0] if self._segments else None
        return head.key if head is not None and head.started else None

    @property
    def interpreting(self) -> bool:
        """Whether an interpretation is playing or waiting to play."""
        return any(s.chunks for s in self._segments)

    # -- pulling ------------------------------------------------------------------

    def pull(self, samples: int = FRAME_SAMPLES) -> np.ndarray:
        """The next ``samples`` of the mix as int16 (silence where nothing plays)."""
        mix = np.zeros(samples, dtype=np.float32)
        interpretation = self._take_interpretation(samples)
        ducking = interpretation is not None
        if interpretation is not None:
            mix[: len(interpretation)] += interpretation * self.interpretation_gain
        for source in list(self._direct):
            queue, gain = self._direct[source]
            taken = _take(queue, samples)
            if taken is not None:
                mix[: len(taken)] += taken * (min(gain, self.duck_gain) if ducking else gain)
            if not queue:
                del self._direct[source]
        return np.clip(mix, -32768, 32767).astype(np.int16)

    def _take_interpretation(self, samples: int) -> np.ndarray | None:
        out: list[np.ndarray] = []
        wanted = samples
        while wanted > 0 and self._segments:
            segment = self._segments[0]
            if not segment.chunks:
                if segment.done:
                    self._segments.popleft()
                    segment.end()
                    continue
                break  # still being synthesized: wait, do not skip ahead
            if not segment.started:
                segment.started = True
                if segment.on_start is not None:
                    segment.on_start()
            piece = _take(segment.chunks, wanted)
            if piece is not None:
                out.append(piece)
                wanted -= len(piece)
        if not out:
            return None
        return np.concatenate(out)


def _take(queue: deque[np.ndarray], samples: int) -> np.ndarray | None:
    """Up to ``samples`` from the front of a queue of chunks, as float32."""
    parts: list[np.ndarray] = []
    wanted = samples
    while wanted > 0 and queue:
        head = queue[0]
        if len(head) <= wanted:
            parts.append(head)
            queue.popleft()
            wanted -= len(head)
        else:
            parts.append(head[:wanted])
            queue[0] = head[wanted:]
            wanted = 0
    if not parts:
        return None
    return np.concatenate(parts).astype(np.float32)


class ListenerAudioTrack(MediaStreamTrack):
    """An outgoing aiortc audio track: 20 ms of 48 kHz mono per frame from a mixer.

    Paced by the wall clock like aiortc's own ``AudioStreamTrack`` (the encoder does
    not pace), so a listener receives a steady stream with silence while idle.
    """

    kind = "audio"

    def __init__(self, mixer: ListenerMixer) -> None:
        super().__init__()
        self.mixer = mixer
        self._pacer = FramePacer()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        return self._pacer.frame(self.mixer.pull(FRAME_SAMPLES))


class FramePacer:
    """Paces an outgoing audio track at real time: one 20 ms frame per 20 ms of clock.

    aiortc pulls frames as fast as ``recv`` returns them, so a track must sleep until
    each frame is due; after a stall of over a second it resynchronises rather than
    sending a burst.
    """

    def __init__(self, rate: int = MIX_RATE, samples: int = FRAME_SAMPLES) -> None:
        self.rate = rate
        self.samples = samples
        self._start: float | None = None
        self.timestamp = 0

    async def wait(self) -> None:
        """Sleep until the next frame is due (the first one is due at once)."""
        if self._start is None:
            self._start = time.monotonic()
            return
        self.timestamp += self.samples
        wait = self._start + self.timestamp / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -1.0:
            self._start = time.monotonic() - self.timestamp / self.rate

    def frame(self, pcm: np.ndarray) -> av.AudioFrame:
        """The current frame: mono int16 ``pcm`` stamped with this pacer's clock."""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.timestamp
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame
