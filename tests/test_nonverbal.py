"""Non-verbal sounds carried through interpretation: the gate beside the VAD, the
classifier (a tiny random AST through the real loader, forced to hear laughter), and the
sounds placed among the interpretations in order, with ``[laughs]`` captions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engines.base import AudioEvent, VADEngine, VADStream
from pipeline.engines.events.ast import ASTAudioEventEngine
from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
from pipeline.nonverbal import EnergyGate, NonverbalParams, event_kind
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams
from tests.fakes import ToneASREngine, dominant_frequency, fake_engines, silence, tone
from tests.tiny_media import write_ast
from tests.tiny_models import shared_checkpoint

FAST = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)
#: The "laugh" the VAD passes over (see PickyVAD) and the utterance with no words in it.
LAUGH_HZ, WORDLESS_HZ = 200, 880


class PickyVADStream(VADStream):
    """Speech = loud and pitched above 300 Hz: a low loud tone is sound, not speech."""

    def speech_probability(self, window: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        return 1.0 if rms > 500 and dominant_frequency(window) > 300 else 0.0

    def reset(self) -> None:
        pass


class PickyVADEngine(VADEngine):
    name = "picky"

    def stream(self) -> VADStream:
        return PickyVADStream()


@pytest.fixture(scope="module")
def laughing_classifier(tmp_path_factory) -> ASTAudioEventEngine:
    """A random AST whose head always says "Laughter", loaded by the engine's real loader."""
    path = shared_checkpoint(tmp_path_factory.getbasetemp(), "ast-laughter", lambda f: write_ast(f, force="Laughter"))
    engine = ASTAudioEventEngine(model=str(path))
    engine.load()
    return engine


def params(**changes) -> InterpretationParams:
    return InterpretationParams(segmenter=FAST, streaming=None, nonverbal=NonverbalParams(**changes))


def speaker(*parts: np.ndarray) -> SpeakerTrack:
    return SpeakerTrack("alice", np.concatenate(parts), "en")


# -- the pieces ----------------------------------------------------------------------------


def test_the_gate_reports_loud_stretches_the_vad_calls_no_speech():
    gate = EnergyGate(PickyVADStream(), NonverbalParams(min_ms=300, gap_ms=200))
    audio = np.concatenate([silence(0.5), tone(440, 0.6), silence(0.5), tone(LAUGH_HZ, 0.8), silence(0.6)])
    found = []
    for start in range(0, len(audio), 320):  # 20 ms frames, as transports deliver
        found += gate.push(audio[start : start + 320])
    found += gate.flush()
    assert len(found) == 1  # the speech tone is the VAD's business, the low tone is ours
    (stretch,) = found
    assert stretch.start == pytest.approx(1.6, abs=0.04) and stretch.end == pytest.approx(2.4, abs=0.04)
    assert abs(dominant_frequency(stretch.audio) - LAUGH_HZ) < 10


def test_a_short_blip_is_no_candidate():
    gate = EnergyGate(PickyVADStream(), NonverbalParams(min_ms=300))
    assert gate.push(np.concatenate([silence(0.3), tone(LAUGH_HZ, 0.15), silence(0.5)])) + gate.flush() == []


def test_event_kind_picks_the_best_kind_above_the_threshold():
    events = [AudioEvent("Speech", 0.9), AudioEvent("Giggle", 0.4), AudioEvent("Sigh", 0.35)]
    assert event_kind(events, ["laughs", "sighs"], 0.3) == ("laughs", 0.4)
    assert event_kind(events, ["cries"], 0.3) is None
    assert event_kind(events, ["laughs"], 0.5) is None


def test_the_classifier_scores_clips_in_one_batch(laughing_classifier):
    clips = [tone(LAUGH_HZ, 0.5), silence(0.05), tone(440, 2.0)]
    results = laughing_classifier.classify(clips, 16000)
    assert len(results) == 3
    assert all(r[0].label == "Laughter" and r[0].score > 0.99 for r in results)


def test_the_classifier_can_look_at_a_shorter_window_than_it_was_trained_on(tmp_path_factory):
    path = shared_checkpoint(tmp_path_factory.getbasetemp(), "ast-laughter", lambda f: write_ast(f, force="Laughter"))
    full = ASTAudioEventEngine(model=str(path), seconds=None)
    short = ASTAudioEventEngine(model=str(path), seconds=0.64)  # 64 frames instead of 128
    for engine in (full, short):
        engine.load()
    embeddings = [e._model.audio_spectrogram_transformer.embeddings.position_embeddings.detach() for e in (full, short)]
    assert [tuple(p.shape[:2]) for p in embeddings] == [(1, 2 + 8 * 8), (1, 2 + 8 * 4)]
    # The positions kept are the first time steps of every frequency row.
    assert np.allclose(embeddings[1][0, 2:].reshape(8, 4, -1), embeddings[0][0, 2:].reshape(8, 8, -1)[:, :4])
    assert short.classify([tone(LAUGH_HZ, 2.0)], 16000)[0][0].label == "Laughter"


# -- through the cascade -------------------------------------------------------------------


async def test_laughter_reaches_the_interpretation_in_order_and_in_the_captions(laughing_classifier):
    engines = fake_engines(vad=PickyVADEngine(), asr=ToneASREngine(empty_on={WORDLESS_HZ}), events=laughing_classifier)
    track = speaker(
        silence(0.3), tone(440, 0.6), silence(0.8),  # "tone 440"
        tone(LAUGH_HZ, 0.7), silence(0.8),  # loud, but the VAD calls it no speech
        tone(660, 0.6), silence(0.8),  # "tone 660"
        tone(WORDLESS_HZ, 0.6), silence(0.8),  # an utterance the recogniser finds no words in
        tone(550, 0.6), silence(1.0),  # "tone 550"
    )
    result = await run_cascade_on_tracks(engines, [track], ["es"], params=params(), progress=False)

    assert [r.transcript for r in result.utterances] == ["Tone 440.", "[laughs]", "Tone 660.", "[laughs]", "Tone 550."]
    laughs = [r for r in result.utterances if r.utterance.kind == "nonverbal"]
    assert [r.translations for r in laughs] == [{"es": "[laughs]"}] * 2
    # The sound itself, not speech about it: the original audio at the output's rate.
    sounds = [result.audio[r.id]["es"] for r in laughs]
    assert [round(dominant_frequency(s, result.sample_rate), -1) for s in sounds] == [LAUGH_HZ, WORDLESS_HZ]
    assert len(sounds[0]) / result.sample_rate == pytest.approx(0.7, abs=0.1)
    # Captions mark them (fed faster than real time, captions come in any order: by position).
    start = {r.id: r.utterance.start for r in result.utterances}
    finals = sorted((c for c in result.captions if c["final"]), key=lambda c: start[c["utterance_id"]])
    assert [(c["text"], c["translations"]) for c in finals][1::2] == [("[laughs]", {"es": "[laughs]"})] * 2
    assert result.errors == []


@pytest.mark.slow
async def test_at_live_pace_the_laugh_is_heard_between_the_sentences_around_it(laughing_classifier):
    # A live room hears interpretations in the order their audio comes out, so the
    # laugh must come out after the interpretation of what was said before it.
    engines = fake_engines(vad=PickyVADEngine(), asr=ToneASREngine(delays={440: 0.4}), events=laughing_classifier)
    track = speaker(silence(0.2), tone(440, 0.5), silence(0.5), tone(LAUGH_HZ, 0.5), silence(0.6), tone(660, 0.5), silence(0.8))
    result = await run_cascade_on_tracks(engines, [track], ["es"], params=params(), realtime=True, progress=False)
    assert [r.transcript for r in result.utterances] == ["Tone 440.", "[laughs]", "Tone 660."]
    assert list(result.audio) == [r.id for r in result.utterances]  # first audio out, in this order
    assert [c["text"] for c in result.captions if c["final"]] == ["Tone 440.", "[laughs]", "Tone 660."]


async def test_a_room_with_non_verbal_sounds_off_stays_quiet(laughing_classifier):
    engines = fake_engines(vad=PickyVADEngine(), events=laughing_classifier)
    track = speaker(silence(0.3), tone(440, 0.6), silence(0.8), tone(LAUGH_HZ, 0.7), silence(1.0))
    result = await run_cascade_on_tracks(engines, [track], ["es"], params=params(enabled=False), progress=False)
    assert [r.transcript for r in result.utterances] == ["Tone 440."]


async def test_sounds_the_classifier_does_not_call_a_kind_are_left_out(laughing_classifier):
    engines = fake_engines(vad=PickyVADEngine(), events=laughing_classifier)
    track = speaker(silence(0.3), tone(440, 0.6), silence(0.8), tone(LAUGH_HZ, 0.7), silence(1.0))
    # The room carries crying only: laughter is not a kind it wants.
    result = await run_cascade_on_tracks(engines, [track], ["es"], params=params(kinds=["cries"]), progress=False)
    assert [r.transcript for r in result.utterances] == ["Tone 440."]
