"""The bot's one voice stream: interpretations queued in order of speech end.

:class:`InterpretationAudioSource` is the ``discord.AudioSource`` handed to
``VoiceClient.play``. discord.py's player thread calls :meth:`read` every 20 ms; the
pipeline adds synthesized speech from the event loop with :meth:`enqueue`. Each
utterance has a *key* that orders it (e.g. ``(speech_end, utterance_id)``); chunks of
one key are appended to that utterance, and utterances play one after another in key
order:

* an utterance starts only when every earlier key that has been *announced*
  (:meth:`announce`, or by enqueuing a chunk) is finished or abandoned — so a short
  reply synthesized fast does not jump ahead of a longer sentence said before it;
* once started, an utterance plays to its end: it waits (silence) for its next
  chunk until :meth:`finish` says there is none, and an earlier key announced while
  it plays goes next;
* :meth:`abandon` drops an utterance that will never be completed (a stage gave up).

Chunks enqueued with the empty key ``()`` are unordered: they play whenever no keyed
utterance is playing and never hold anything up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import numpy as np

__all__ = ["FRAME_BYTES", "InterpretationAudioSource"]

_RATE = 48000
#: 20 ms of 48 kHz stereo s16le: what discord.py's player reads per packet.
FRAME_BYTES = discord.opus.Encoder.FRAME_SIZE
_SILENCE = bytes(FRAME_BYTES)
#: Keys remembered as done, so a straggling chunk of a finished utterance is dropped.
_DONE_MEMORY = 4096


@dataclass
class _Utterance:
    key: tuple
    chunks: deque[bytes] = field(default_factory=deque)
    offset: int = 0  # bytes of chunks[0] already played
    finished: bool = False
    started: bool = False
    resampler: Any = None
    rate: int = 0

    def available(self) -> int:
        return sum(len(c) for c in self.chunks) - self.offset


class InterpretationAudioSource(discord.AudioSource):
    """A thread-safe ``AudioSource`` playing queued utterances in key order.

    Args:
        on_start: Called with the key when an utterance's first audio is read (from
            the player thread): the moment its audio goes out, for latency marks.
        on_done: Called with the key when an utterance has been played to its end or
            abandoned.
    """

    def __init__(
        self,
        *,
        on_start: Callable[[tuple], None] | None = None,
        on_done: Callable[[tuple], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple, _Utterance] = {}
        self._current: _Utterance | None = None
        self._loose = _Utterance(key=())
        self._done: OrderedDict[tuple, None] = OrderedDict()
        self._on_start = on_start
        self._on_done = on_done
        self.dropped_chunks = 0

    # ------------------------------------------------------------------ writers

    def announce(self, key: tuple) -> None:
        """Declare that utterance ``key`` will come: later keys wait for it."""
        with self._lock:
            self._get(key)

    def enqueue(self, pcm: bytes, sample_rate: int, *, key: tuple = ()) -> None:
        """Add mono int16 PCM at ``sample_rate`` to utterance ``key`` (``()``: unordered).

        Raises:
            ValueError: ``sample_rate`` is not positive or ``pcm`` has an odd length.
        """
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if len(pcm) % 2:
            raise ValueError("pcm must be 16-bit samples (an even number of bytes)")
        with self._lock:
            utterance = self._loose if key == () else self._get(key)
            if utterance is None:
                self.dropped_chunks += 1
                return
            stereo = self._to_stereo(utterance, pcm, sample_rate, last=False)
            if stereo:
                utterance.chunks.append(stereo)

    def finish(self, key: tuple) -> None:
        """No more chunks for ``key``: once played out, the next utterance may start."""
        with self._lock:
            utterance = self._get(key)
            if utterance is None:
                return
            tail = self._to_stereo(utterance, b"", utterance.rate or _RATE, last=True)
            if tail:
                utterance.chunks.append(tail)
            utterance.finished = True

    def abandon(self, key: tuple) -> None:
        """Drop utterance ``key`` (also mid-play): it will never be completed."""
        done = None
        with self._lock:
            utterance = self._pending.pop(key, None)
            if self._current is not None and self._current.key == key:
                utterance, self._current = self._current, None
            self._remember_done(key)
            if utterance is not None:
                done = key
        if done is not None and self._on_done:
            self._on_done(done)

    def clear(self) -> None:
        """Drop everything queued and playing; later keys start a fresh queue."""
        with self._lock:
            for key in [*self._pending, *([self._current.key] if self._current else [])]:
                self._remember_done(key)
            self._pending.clear()
            self._current = None
            self._loose = _Utterance(key=())

    def pending_keys(self) -> list[tuple]:
        """Keys not yet played out, in play order (the playing one first)."""
        with self._lock:
            keys = sorted(self._pending)
            return ([self._current.key] if self._current else []) + keys

    # ------------------------------------------------------------------ discord.AudioSource

    def is_opus(self) -> bool:
        return False

    def read(self) -> bytes:
        """The next 20 ms: exactly ``FRAME_BYTES`` bytes, silence where nothing is ready."""
        out = bytearray()
        started: list[tuple] = []
        finished: list[tuple] = []
        with self._lock:
            while len(out) < FRAME_BYTES:
                utterance = self._playing(finished)
                if utterance is None:
                    break
                if not self._take(utterance, out):
                    break  # the playing utterance waits for its next chunk
                if not utterance.started and utterance.key != ():
                    utterance.started = True
                    started.append(utterance.key)
        if len(out) < FRAME_BYTES:
            out += _SILENCE[: FRAME_BYTES - len(out)]
        for key in started:
            if self._on_start:
                self._on_start(key)
        for key in finished:
            if self._on_done:
                self._on_done(key)
        return bytes(out)

    def cleanup(self) -> None:
        self.clear()

    # ------------------------------------------------------------------ internals

    def _get(self, key: tuple) -> _Utterance | None:
        if not isinstance(key, tuple):
            raise TypeError(f"key must be a tuple, got {type(key).__name__}")
        if key == () or key in self._done:
            return None
        if self._current is not None and self._current.key == key:
            return self._current
        utterance = self._pending.get(key)
        if utterance is None:
            utterance = self._pending[key] = _Utterance(key=key)
        return utterance

    def _remember_done(self, key: tuple) -> None:
        self._done[key] = None
        while len(self._done) > _DONE_MEMORY:
            self._done.popitem(last=False)

    def _playing(self, finished: list[tuple]) -> _Utterance | None:
        """The utterance to read from now, advancing past ones played out."""
        while True:
            current = self._current
            if current is not None:
                if current.available() > 0 or not current.finished:
                    return current if current.available() > 0 else None
                finished.append(current.key)
                self._remember_done(current.key)
                self._current = None
            if self._pending:
                first = min(self._pending)
                self._current = self._pending.pop(first)
                continue
            return self._loose if self._loose.available() > 0 else None

    @staticmethod
    def _take(utterance: _Utterance, out: bytearray) -> bool:
        moved = False
        while utterance.chunks and len(out) < FRAME_BYTES:
            chunk = utterance.chunks[0]
            n = min(len(chunk) - utterance.offset, FRAME_BYTES - len(out))
            out += chunk[utterance.offset : utterance.offset + n]
            utterance.offset += n
            moved = True
            if utterance.offset >= len(chunk):
                utterance.chunks.popleft()
                utterance.offset = 0
        return moved

    @staticmethod
    def _to_stereo(utterance: _Utterance, pcm: bytes, rate: int, *, last: bool) -> bytes:
        """Mono int16 at ``rate`` → 48 kHz interleaved stereo, resampled continuously per utterance."""
        mono = np.frombuffer(pcm, dtype=np.int16)
        if rate != _RATE or utterance.resampler is not None:
            if utterance.resampler is None or utterance.rate != rate:
                import soxr

                utterance.resampler = soxr.ResampleStream(rate, _RATE, 1, dtype="int16", quality="HQ")
                utterance.rate = rate
            mono = utterance.resampler.resample_chunk(mono, last=last)
        if mono.size == 0:
            return b""
        return np.repeat(np.asarray(mono, dtype=np.int16), 2).tobytes()
