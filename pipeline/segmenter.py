"""Utterance segmentation: VAD window probabilities in, utterances out.

:class:`UtteranceSegmenter` buffers one participant's 16-bit PCM into VAD windows, scores
each with the participant's :class:`~pipeline.engines.base.VADStream` and cuts the stream
into :class:`Segment` s: speech start (first window at or above ``threshold``) through the
last window still at or above ``neg_threshold``, ended by ``min_silence_ms`` of anything
lower (the hang-over). Each segment carries ``preroll_ms`` of audio before the start and
``postroll_ms`` after the end, so soft onsets and trailing consonants reach the ASR.

A monologue never waits: once speech has lasted ``max_utterance_s`` it is cut at the
least speech-like window of its last ~2 s (usually a breath), that part is emitted with
``split=True`` and the rest carries on as the start of the next utterance. Split parts
join without overlap or gap (no postroll after a cut, no preroll before a continuation),
so the ASR never hears a word twice.

For streaming recognition, :meth:`UtteranceSegmenter.push_events` reports the same
decisions as they happen (:class:`SpeechEvent`): speech ``start`` (with the preroll),
the ``audio`` of every window while an utterance is under way (hang-over included),
``pause`` at the first window below ``neg_threshold`` after speech (where the speech
ended, if the hang-over confirms it), ``resume`` when speech comes back within the
hang-over, and ``end``/``split`` with the finished :class:`Segment`. A recogniser fed
this way can finalise at the pause, long before the hang-over has passed.

The segmenter is frame-free and synchronous; ``push`` runs the VAD model, so processors
call it off the event loop. Memory stays bounded: while silent only the preroll is kept,
and an utterance holds at most ``max_utterance_s`` plus pre/postroll and hang-over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.engines.base import VADStream

__all__ = ["Segment", "SegmenterParams", "SpeechEvent", "UtteranceSegmenter"]

#: Peak level (int16 steps, about -80 dBFS) at or below which a window is digital silence.
_DIGITAL_SILENCE = 3
#: How far back from the maximum length a split looks for a pause, in seconds.
_SPLIT_SEARCH_S = 2.0


@dataclass
class SegmenterParams:
    """How window probabilities become utterances.

    Attributes:
        threshold: Speech starts at a window whose probability is at least this.
        neg_threshold: Speech continues while windows score at least this; ``None`` means
            ``threshold - 0.15`` (not below 0), the hysteresis Silero recommends.
        min_speech_ms: Utterances shorter than this (start to end) are discarded as blips.
        min_silence_ms: This much audio below ``neg_threshold`` ends an utterance.
        preroll_ms: Audio kept before the detected start.
        postroll_ms: Audio kept after the last speech window; at most ``min_silence_ms``,
            since the utterance is emitted once the hang-over has passed.
        max_utterance_s: Longer speech is split so that a monologue never waits.

    Raises:
        ValueError: A value is out of range (negative durations, thresholds outside
            [0, 1], ``neg_threshold`` above ``threshold``, ...).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: int = 250
    min_silence_ms: int = 500
    preroll_ms: int = 200
    postroll_ms: int = 150
    max_utterance_s: float = 15.0

    def __post_init__(self) -> None:
        # Written as "not (x in range)" so that NaN fails too.
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.neg_threshold is not None:
            if not 0.0 <= self.neg_threshold <= 1.0:
                raise ValueError(f"neg_threshold must be in [0, 1], got {self.neg_threshold}")
            if self.neg_threshold > self.threshold:
                raise ValueError(
                    f"neg_threshold ({self.neg_threshold}) must not exceed threshold "
                    f"({self.threshold}): speech would end on the windows that start it"
                )
        for name in ("min_speech_ms", "preroll_ms", "postroll_ms"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be zero or positive, got {value}")
        if not self.min_silence_ms > 0:
            raise ValueError(f"min_silence_ms must be positive, got {self.min_silence_ms}")
        if self.postroll_ms > self.min_silence_ms:
            raise ValueError(
                f"postroll_ms ({self.postroll_ms}) must not exceed min_silence_ms "
                f"({self.min_silence_ms}): an utterance is emitted once its hang-over has passed"
            )
        if not (math.isfinite(self.max_utterance_s) and self.max_utterance_s >= 1.0):
            raise ValueError(
                f"max_utterance_s must be at least 1 second, got {self.max_utterance_s}"
            )
        if self.max_utterance_s * 1000 <= self.min_speech_ms:
            raise ValueError(
                f"max_utterance_s ({self.max_utterance_s} s) must be longer than "
                f"min_speech_ms ({self.min_speech_ms} ms)"
            )

    @property
    def effective_neg_threshold(self) -> float:
        """``neg_threshold``, or its default ``threshold - 0.15`` (not below 0)."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(0.0, self.threshold - 0.15)


@dataclass
class Segment:
    """One utterance cut from a participant's audio.

    Attributes:
        start: Speech start in seconds on the stream clock (samples consumed / rate),
            excluding the preroll.
        end: Speech end (end of the last speech window, or the cut of a split), excluding
            postroll and hang-over.
        audio: Mono int16 samples from ``start - preroll`` to ``end + postroll`` (clipped to
            what the stream holds; no postroll after a split, no preroll before the part
            that continues one).
        split: True if cut at ``max_utterance_s`` rather than at a pause.
    """

    start: float
    end: float
    audio: np.ndarray
    split: bool

    @property
    def duration(self) -> float:
        """Seconds of speech, ``end - start``."""
        return self.end - self.start


@dataclass
class SpeechEvent:
    """One step of one participant's speech, as the segmenter decides it.

    Attributes:
        kind: ``start`` (speech began at ``at``; ``audio`` holds the preroll and the first
            window), ``audio`` (more audio of the utterance under way, hang-over
            included), ``pause`` (speech stopped at ``at``: its last speech window ended
            there), ``resume`` (speech came back at ``at`` within the hang-over), ``end``
            (the hang-over passed: ``segment`` is the utterance) or ``split`` (cut at the
            maximum length: ``segment`` is the part emitted; speech goes on).
        at: Stream seconds the event refers to (see ``kind``).
        position: Stream seconds of all audio scored when the event was decided.
        audio: Samples for ``start`` and ``audio`` events; empty otherwise.
        segment: The finished utterance of ``end`` and ``split`` events.
    """

    kind: str
    at: float
    position: float
    audio: np.ndarray | None = None
    segment: Segment | None = None


class UtteranceSegmenter:
    """Cuts one participant's audio into utterances using their VAD stream.

    Not thread-safe: one participant's audio is pushed in order by one caller at a time.
    ``push`` runs the VAD model, so call it off the event loop.

    Args:
        stream: This participant's VAD stream (window size ``stream.window``).
        params: Thresholds and durations; defaults to ``SegmenterParams()``.
        sample_rate: Sample rate of the pushed audio; must be the VAD's rate.
    """

    def __init__(
        self,
        stream: VADStream,
        params: SegmenterParams | None = None,
        sample_rate: int = 16000,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self._stream = stream
        self._params = params if params is not None else SegmenterParams()
        self._rate = sample_rate
        self._window = int(stream.window)

        p = self._params
        ms = sample_rate / 1000
        self._neg_threshold = p.effective_neg_threshold
        self._min_speech = round(p.min_speech_ms * ms)
        self._min_silence = round(p.min_silence_ms * ms)
        self._preroll = round(p.preroll_ms * ms)
        self._postroll = round(p.postroll_ms * ms)
        self._max_len = round(p.max_utterance_s * sample_rate)
        self._split_search = round(min(_SPLIT_SEARCH_S, p.max_utterance_s / 2) * sample_rate)

        # Samples not yet a full window.
        self._pending = np.zeros(0, dtype=np.int16)
        # Stream clock, in samples: everything before _consumed has been scored (or flushed).
        self._consumed = 0
        # Audio kept, as chunks; _buf_start is the stream position of its first sample.
        self._chunks: list[np.ndarray] = []
        self._buf_len = 0
        self._buf_start = 0
        # Where the next preroll may reach back to: not into audio already emitted.
        self._floor = 0
        # Events of the current push, when the caller asked for them.
        self._events: list[SpeechEvent] | None = None
        self._paused = False
        self._reset_utterance()

    @property
    def params(self) -> SegmenterParams:
        """The parameters in use."""
        return self._params

    @property
    def position(self) -> float:
        """Seconds of audio pushed so far (the stream clock, including a partial window)."""
        return (self._consumed + self._pending.shape[0]) / self._rate

    @property
    def in_speech(self) -> bool:
        """Whether an utterance is under way (speech, or the hang-over after it)."""
        return self._start is not None

    def push(self, pcm: np.ndarray) -> list[Segment]:
        """Add audio; return the utterances it completed, in order.

        Args:
            pcm: Mono int16 samples, any length (buffered to whole VAD windows).

        Raises:
            ValueError: ``pcm`` is not 1-D int16.
        """
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError(f"push wants 1-D int16 samples, got {pcm.dtype} {pcm.shape}")
        if pcm.shape[0] == 0:
            return []
        data = np.concatenate((self._pending, pcm)) if self._pending.shape[0] else pcm
        whole = data.shape[0] - data.shape[0] % self._window
        segments: list[Segment] = []
        for offset in range(0, whole, self._window):
            segments.extend(self._process_window(data[offset : offset + self._window]))
        # Copy so the caller's array is not kept alive (or mutated under us) by a view.
        self._pending = data[whole:].copy()
        return segments

    def push_events(self, pcm: np.ndarray) -> list[SpeechEvent]:
        """Add audio; return what happened, in order (see :class:`SpeechEvent`).

        Consecutive ``audio`` events of one call are merged into one.

        Raises:
            ValueError: ``pcm`` is not 1-D int16.
        """
        self._events = []
        try:
            self.push(pcm)
            return _merge_audio(self._events)
        finally:
            self._events = None

    def flush_events(self) -> list[SpeechEvent]:
        """:meth:`flush`, reported as events (an ``end`` for the utterance under way)."""
        self._events = []
        try:
            self.flush()
            return self._events
        finally:
            self._events = None

    def _event(self, kind: str, at: int, *, audio: np.ndarray | None = None, segment: Segment | None = None) -> None:
        if self._events is not None:
            self._events.append(
                SpeechEvent(kind, at / self._rate, self._consumed / self._rate, audio=audio, segment=segment)
            )

    def flush(self) -> list[Segment]:
        """End of stream: emit the utterance under way if long enough, then start afresh.

        A trailing partial window is kept as audio (it may fall in the postroll) but not
        scored. The VAD stream is reset; the stream clock keeps running, so audio pushed
        afterwards continues the same timeline.
        """
        if self._pending.shape[0]:
            self._append(self._pending)
            self._consumed += self._pending.shape[0]
            self._pending = np.zeros(0, dtype=np.int16)
        segments: list[Segment] = []
        if self._start is not None:
            speech_end = self._speech_end
            segment = self._end_utterance()
            if segment is not None:
                segments.append(segment)
            self._event("end", speech_end, segment=segment)
        self._chunks, self._buf_len, self._buf_start = [], 0, self._consumed
        self._floor = self._consumed
        self._reset_utterance()
        self._stream.reset()
        return segments

    # -- internals -------------------------------------------------------------------

    def _reset_utterance(self) -> None:
        self._start: int | None = None  # stream position of speech start
        self._speech_end = 0  # end of the last window at or above neg_threshold
        self._continuation = False  # this utterance carries on from a split
        self._paused = False  # a pause was reported and speech has not resumed
        self._starts: list[int] = []  # window start positions since _start
        self._probs: list[float] = []  # and their probabilities

    def _append(self, samples: np.ndarray) -> None:
        self._chunks.append(samples.copy())
        self._buf_len += samples.shape[0]

    def _audio(self, begin: int, end: int) -> np.ndarray:
        """Buffered samples for stream positions [begin, end), clipped to what is held."""
        begin = max(begin, self._buf_start)
        end = min(end, self._buf_start + self._buf_len)
        if end <= begin:
            return np.zeros(0, dtype=np.int16)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0][begin - self._buf_start : end - self._buf_start].copy()

    def _drop_before(self, position: int) -> None:
        """Forget buffered audio before ``position``."""
        cut = position - self._buf_start
        if cut <= 0:
            return
        kept = self._audio(position, self._buf_start + self._buf_len)
        self._chunks = [kept] if kept.shape[0] else []
        self._buf_len = kept.shape[0]
        self._buf_start = position

    def _process_window(self, window: np.ndarray) -> list[Segment]:
        if self._start is None and int(np.abs(window).max()) <= _DIGITAL_SILENCE:
            # Digital silence (a muted or idle line) is no speech: no model call needed.
            probability = 0.0
        else:
            probability = self._stream.speech_probability(window)
        win_start = self._consumed
        self._append(window)
        self._consumed += window.shape[0]
        win_end = self._consumed

        if self._start is None:
            if probability >= self._params.threshold:
                self._start = win_start
                self._speech_end = win_end
                self._starts, self._probs = [win_start], [probability]
                if self._events is not None:
                    begin = max(win_start - self._preroll, self._floor)
                    self._event("start", win_start, audio=self._audio(begin, win_end))
            else:
                # Silent: keep only the preroll; trim in batches of windows, not every call.
                keep_from = max(win_end - self._preroll, self._floor)
                if keep_from - self._buf_start >= 8 * self._window:
                    self._drop_before(keep_from)
            return []

        self._starts.append(win_start)
        self._probs.append(probability)
        if self._events is not None:
            self._event("audio", win_start, audio=window.copy())
        if probability >= self._neg_threshold:
            if self._paused:
                self._paused = False
                self._event("resume", win_start)
            self._speech_end = win_end
        else:
            if not self._paused:
                self._paused = True
                self._event("pause", self._speech_end)
            if win_end - self._speech_end >= self._min_silence:
                speech_end = self._speech_end
                segment = self._end_utterance()
                self._event("end", speech_end, segment=segment)
                return [segment] if segment is not None else []
        if win_end - self._start >= self._max_len:
            segment = self._split()
            self._event("split", int(segment.end * self._rate), segment=segment)
            return [segment]
        return []

    def _end_utterance(self) -> Segment | None:
        """Close the utterance at its last speech window; None if it was only a blip."""
        assert self._start is not None
        start, end = self._start, self._speech_end
        long_enough = end - start >= self._min_speech or (self._continuation and end > start)
        segment = None
        if long_enough:
            begin = start if self._continuation else start - self._preroll
            audio = self._audio(max(begin, self._floor), end + self._postroll)
            segment = Segment(start / self._rate, end / self._rate, audio, split=False)
            self._floor = end + self._postroll
        self._reset_utterance()
        # Back to silence: keep what may become the next utterance's preroll.
        self._drop_before(max(self._consumed - self._preroll, self._floor))
        return segment

    def _split(self) -> Segment:
        """Cut a too-long utterance at its least speech-like recent window."""
        assert self._start is not None
        now = self._consumed
        # Candidates: windows ending within the search span, never the first window (a cut
        # there would leave nothing). Ties go to the latest, to keep the emitted part long.
        first = 1
        while (
            first < len(self._starts) - 1
            and self._starts[first] + self._window <= now - self._split_search
        ):
            first += 1
        best = first
        for i in range(first, len(self._probs)):
            if self._probs[i] <= self._probs[best]:
                best = i
        cut = self._starts[best] + self._window  # the low window ends the emitted part

        # The emitted part ends at its last speech window, or at the cut if none is after
        # the start (cannot happen: the start window is speech).
        end = self._start + self._window
        for i in range(best, -1, -1):
            if self._probs[i] >= self._neg_threshold:
                end = self._starts[i] + self._window
                break
        begin = self._start if self._continuation else self._start - self._preroll
        audio = self._audio(max(begin, self._floor), cut)
        segment = Segment(self._start / self._rate, end / self._rate, audio, split=True)

        # Carry the rest on as the beginning of the next utterance.
        rest_starts, rest_probs = self._starts[best + 1 :], self._probs[best + 1 :]
        self._start = cut
        self._continuation = True
        self._starts, self._probs = rest_starts, rest_probs
        self._speech_end = cut
        for s, prob in zip(rest_starts, rest_probs, strict=True):
            if prob >= self._neg_threshold:
                self._speech_end = s + self._window
        self._floor = cut
        self._drop_before(cut)
        return segment


def _merge_audio(events: list[SpeechEvent]) -> list[SpeechEvent]:
    """Consecutive ``audio`` events as one (fewer frames, same samples)."""
    merged: list[SpeechEvent] = []
    for event in events:
        last = merged[-1] if merged else None
        if event.kind == "audio" and last is not None and last.kind == "audio":
            assert last.audio is not None and event.audio is not None
            last.audio = np.concatenate((last.audio, event.audio))
            last.position = event.position
        else:
            merged.append(event)
    return merged
