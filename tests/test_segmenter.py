"""UtteranceSegmenter: real Silero VAD on real speech, plus scripted probabilities for the rules."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engines.base import VADStream
from pipeline.engines.vad.silero import SileroVADEngine
from pipeline.segmenter import Segment, SegmenterParams, UtteranceSegmenter

RATE = 16000
WINDOW = 512


@pytest.fixture(scope="module")
def vad() -> SileroVADEngine:
    engine = SileroVADEngine()
    engine.load()
    return engine


def clip(librivox, suffix: str) -> np.ndarray:
    return next(c.pcm for c in librivox if c.path.stem.endswith(suffix))


def speech_bounds(pcm: np.ndarray) -> tuple[float, float]:
    """First and last loud 20 ms frame (within 25 dB of the loudest), in seconds."""
    frame = RATE // 50
    frames = pcm[: len(pcm) // frame * frame].astype(np.float64).reshape(-1, frame)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    loud = np.nonzero(db > db.max() - 25)[0]
    return loud[0] * frame / RATE, (loud[-1] + 1) * frame / RATE


def trimmed(pcm: np.ndarray) -> np.ndarray:
    start, end = speech_bounds(pcm)
    return pcm[round(start * RATE) : round(end * RATE)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def segment_all(
    segmenter: UtteranceSegmenter, pcm: np.ndarray, chunk: int | None = None
) -> list[Segment]:
    if chunk is None:
        return segmenter.push(pcm) + segmenter.flush()
    out: list[Segment] = []
    for i in range(0, len(pcm), chunk):
        out += segmenter.push(pcm[i : i + chunk])
    return out + segmenter.flush()


def test_two_utterances_with_a_pause(vad, librivox):
    a, b = clip(librivox, "0870"), clip(librivox, "0920")
    lead, gap = silence(0.5), silence(1.5)
    pcm = np.concatenate([lead, a, gap, b, silence(1.0)])
    a_start, a_end = speech_bounds(a)
    b_start, b_end = speech_bounds(b)
    offset_a = len(lead) / RATE
    offset_b = (len(lead) + len(a) + len(gap)) / RATE
    truth = [(offset_a + a_start, offset_a + a_end), (offset_b + b_start, offset_b + b_end)]

    params = SegmenterParams()
    segmenter = UtteranceSegmenter(vad.stream(), params)
    segments = segmenter.push(pcm)
    assert not segmenter.in_speech
    assert segmenter.flush() == []

    assert len(segments) == 2
    for segment, (start, end) in zip(segments, truth, strict=True):
        assert segment.start == pytest.approx(start, abs=0.3)
        assert segment.end == pytest.approx(end, abs=0.3)
        assert not segment.split
        # The audio is the speech plus pre- and postroll, straight from the stream.
        begin = round((segment.start - params.preroll_ms / 1000) * RATE)
        stop = round((segment.end + params.postroll_ms / 1000) * RATE)
        np.testing.assert_array_equal(segment.audio, pcm[begin:stop])
    assert segmenter.position == pytest.approx(len(pcm) / RATE)


def test_silence_gives_nothing(vad):
    segmenter = UtteranceSegmenter(vad.stream())
    assert segmenter.push(silence(5.0)) == []
    assert not segmenter.in_speech
    assert segmenter.flush() == []
    assert segmenter.position == pytest.approx(5.0)


def test_monologue_is_split_at_max_length(vad, librivox):
    # ~40 s of speech with only 0.1 s gaps: no pause long enough to end an utterance.
    pieces: list[np.ndarray] = []
    while sum(len(p) for p in pieces) < 40 * RATE:
        for c in librivox:
            pieces += [trimmed(c.pcm), silence(0.1)]
    pcm = np.concatenate(pieces)[: 40 * RATE]

    params = SegmenterParams(max_utterance_s=10)
    segments = segment_all(UtteranceSegmenter(vad.stream(), params), pcm)

    assert len(segments) >= 4
    for segment in segments:
        assert segment.end - segment.start <= 10.0
        assert len(segment.audio) <= (10.0 + params.preroll_ms / 1000) * RATE
    # Every cut but the last piece (ended by flush) is a split, and the pieces do not overlap.
    assert all(s.split for s in segments[:-1])
    assert not segments[-1].split
    for first, second in zip(segments, segments[1:], strict=False):
        assert first.end <= second.start
    # Together they cover the speech: split parts join without gap or overlap.
    assert sum(len(s.audio) for s in segments) == pytest.approx(len(pcm), abs=0.3 * RATE)
    assert sum(s.end - s.start for s in segments) > 0.9 * len(pcm) / RATE


def test_chunk_size_does_not_matter(vad, librivox):
    pcm = np.concatenate(
        [silence(0.3), clip(librivox, "0880"), silence(0.8), clip(librivox, "0930")]
    )
    params = SegmenterParams(max_utterance_s=2.5)  # exercise splits too
    whole = segment_all(UtteranceSegmenter(vad.stream(), params), pcm)
    for chunk in (123, 320, 4097):
        pieces = segment_all(UtteranceSegmenter(vad.stream(), params), pcm, chunk=chunk)
        assert len(pieces) == len(whole)
        for p, w in zip(pieces, whole, strict=True):
            assert (p.start, p.end, p.split) == (w.start, w.end, w.split)
            np.testing.assert_array_equal(p.audio, w.audio)


def test_flush_emits_trailing_speech(vad, librivox):
    speech = trimmed(clip(librivox, "0890"))
    pcm = np.concatenate([silence(0.5), speech])
    segmenter = UtteranceSegmenter(vad.stream())
    assert segmenter.push(pcm) == []
    assert segmenter.in_speech
    segments = segmenter.flush()
    assert not segmenter.in_speech
    assert len(segments) == 1
    assert segments[0].start == pytest.approx(0.5, abs=0.3)
    assert segments[0].end == pytest.approx(len(pcm) / RATE, abs=0.3)


def test_click_is_not_speech(vad):
    rng = np.random.default_rng(5)
    click = np.clip(rng.normal(0, 12000, int(0.05 * RATE)), -32768, 32767).astype(np.int16)
    pcm = np.concatenate([silence(0.5), click, silence(1.0)])
    segmenter = UtteranceSegmenter(vad.stream())
    assert segment_all(segmenter, pcm) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": 0.5, "neg_threshold": 0.7}, "neg_threshold .* must not exceed"),
        ({"neg_threshold": -0.1}, "neg_threshold"),
        ({"min_speech_ms": -1}, "min_speech_ms"),
        ({"min_silence_ms": 0}, "min_silence_ms"),
        ({"preroll_ms": -200}, "preroll_ms"),
        ({"postroll_ms": -1}, "postroll_ms"),
        ({"postroll_ms": 600, "min_silence_ms": 500}, "postroll_ms .* must not exceed"),
        ({"max_utterance_s": 0.5}, "max_utterance_s"),
        ({"max_utterance_s": float("inf")}, "max_utterance_s"),
        ({"max_utterance_s": 1.0, "min_speech_ms": 1000}, "longer than"),
    ],
)
def test_params_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegmenterParams(**kwargs)


def test_default_neg_threshold():
    assert SegmenterParams().effective_neg_threshold == pytest.approx(0.35)
    assert SegmenterParams(threshold=0.1).effective_neg_threshold == 0.0
    assert SegmenterParams(neg_threshold=0.2).effective_neg_threshold == 0.2


# -- the rules, with scripted probabilities ----------------------------------------------


class ScriptedVADStream(VADStream):
    """A VAD stream that plays back given probabilities, one per window."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs
        self.index = 0

    def speech_probability(self, window: np.ndarray) -> float:
        assert len(window) == self.window
        prob = self.probs[self.index] if self.index < len(self.probs) else 0.0
        self.index += 1
        return prob

    def reset(self) -> None:
        pass


def ramp(n_windows: int) -> np.ndarray:
    """Audio whose every sample is its own index (mod 2**15), to check which samples come back."""
    return (np.arange(n_windows * WINDOW) % 32768).astype(np.int16)


def test_split_cuts_at_the_quietest_recent_window():
    probs = [0.9] * 400
    probs[200] = 0.05  # lower, but more than 2 s before the maximum length: not a candidate
    probs[300] = 0.3  # the breath the split should find
    audio = ramp(400)
    params = SegmenterParams(max_utterance_s=10, preroll_ms=0)
    segmenter = UtteranceSegmenter(ScriptedVADStream(probs), params)
    segments = segmenter.push(audio)

    assert len(segments) == 1
    first = segments[0]
    assert first.split
    cut = 301 * WINDOW  # the quiet window ends the first part
    assert first.start == 0.0
    assert first.end == 300 * WINDOW / RATE  # its last speech window, before the breath
    np.testing.assert_array_equal(first.audio, audio[:cut])

    # The rest carries on as the beginning of the next utterance, without preroll.
    (rest,) = segmenter.flush()
    assert not rest.split
    assert rest.start == cut / RATE
    np.testing.assert_array_equal(rest.audio, audio[cut:])


def test_blip_shorter_than_min_speech_is_dropped():
    # 5 windows (160 ms) of speech < 250 ms, then 8 windows (256 ms) >= 250 ms.
    probs = [0.0] * 10 + [0.9] * 5 + [0.0] * 30 + [0.9] * 8 + [0.0] * 30
    segmenter = UtteranceSegmenter(ScriptedVADStream(probs))
    segments = segment_all(segmenter, ramp(len(probs)))
    assert len(segments) == 1
    assert segments[0].start == 45 * WINDOW / RATE
    assert segments[0].end == 53 * WINDOW / RATE


def test_neg_threshold_keeps_speech_going():
    # Windows between neg_threshold and threshold neither start nor end speech.
    probs = [0.0] * 5 + [0.9] * 10 + [0.4] * 40 + [0.0] * 30
    segments = segment_all(UtteranceSegmenter(ScriptedVADStream(probs)), ramp(len(probs)))
    assert len(segments) == 1
    assert segments[0].end == 55 * WINDOW / RATE
    assert segment_all(UtteranceSegmenter(ScriptedVADStream([0.4] * 50)), ramp(50)) == []


def test_memory_is_bounded_while_silent():
    params = SegmenterParams()
    segmenter = UtteranceSegmenter(ScriptedVADStream([]), params)
    for _ in range(200):
        segmenter.push(ramp(10))
    # Only the preroll (plus a few windows trimmed in batches) is kept while silent.
    held = segmenter._buf_len  # noqa: SLF001 - the bound is the point of this test
    assert held <= params.preroll_ms * RATE // 1000 + 9 * WINDOW


def test_push_rejects_wrong_dtype(vad):
    segmenter = UtteranceSegmenter(vad.stream())
    with pytest.raises(ValueError, match="int16"):
        segmenter.push(np.zeros(512, dtype=np.float32))
