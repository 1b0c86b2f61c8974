"""The whole cascade (file mode's driver) with fake engines: routing, order, isolation."""

from __future__ import annotations

import json

import numpy as np

from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks, write_outputs
from pipeline.latency import LatencyStats
from pipeline.segmenter import SegmenterParams
from tests.fakes import ToneASREngine, fake_engines, silence, tone

PARAMS = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)


def track(user: str, language: str, *parts: np.ndarray) -> SpeakerTrack:
    return SpeakerTrack(user_id=user, pcm=np.concatenate(parts), language=language)


async def test_two_speakers_interleaved_come_out_separated_and_in_order():
    # alice (en): 440 Hz at 0.2–0.8 s, 660 Hz at 2.0–2.6 s; bob (es): 550 Hz at 1.0–1.6 s.
    alice = track("alice", "en", silence(0.2), tone(440, 0.6), silence(1.2), tone(660, 0.6), silence(0.8))
    bob = track("bob", "es", silence(1.0), tone(550, 0.6), silence(1.8))
    result = await run_cascade_on_tracks(fake_engines(), [alice, bob], ["en", "es"], segmenter=PARAMS)
    got = [(r.user_id, r.transcript, r.translations) for r in result.utterances]
    assert got == [
        ("alice", "Tone 440.", {"es": "[es] Tone 440."}),
        ("bob", "Tone 550.", {"en": "[en] Tone 550."}),
        ("alice", "Tone 660.", {"es": "[es] Tone 660."}),
    ]
    for u in result.utterances:
        (lang,) = u.translations
        # one 100 ms beep per word of the translation, at the TTS engine's rate
        words = len(u.translations[lang].split())
        assert len(result.audio[u.id][lang]) == words * 2400
    assert result.errors == [] and result.dropped == []


async def test_a_slow_speaker_does_not_delay_the_other_end_to_end():
    engines = fake_engines(asr=ToneASREngine(delays={440: 1.5}))
    alice = track("alice", "en", silence(0.1), tone(440, 0.5), silence(0.6))
    bob = track("bob", "en", silence(0.1), tone(660, 0.5), silence(0.6))
    result = await run_cascade_on_tracks(engines, [alice, bob], ["es"], segmenter=PARAMS, realtime=True)
    by_user = {r.user_id: r.utterance for r in result.utterances}
    assert by_user["bob"].marks["first_audio_out"] < by_user["alice"].marks["asr_done"]
    assert by_user["bob"].latencies()["end_to_first_audio"] < 0.5


async def test_silence_gives_no_utterances():
    result = await run_cascade_on_tracks(fake_engines(), [track("alice", "en", silence(2.0))], ["es"], segmenter=PARAMS)
    assert result.utterances == [] and result.errors == []


async def test_a_failing_utterance_is_reported_and_the_rest_go_on(tmp_path):
    engines = fake_engines(asr=ToneASREngine(fail_on={440}))
    alice = track("alice", "en", silence(0.2), tone(440, 0.5), silence(0.6), tone(660, 0.5), silence(0.6))
    result = await run_cascade_on_tracks(engines, [alice], ["es"], segmenter=PARAMS)
    assert [r.transcript for r in result.utterances] == ["Tone 660."]
    assert len(result.errors) == 1 and "440" in result.errors[0]
    assert [(r.dropped[0], r.user_id) for r in result.dropped if r.dropped] == [("asr", "alice")]

    doc = write_outputs(result, "es", tmp_path / "out.wav", tmp_path / "cap.json", inputs=["a.wav"])
    saved = json.loads((tmp_path / "cap.json").read_text())
    assert saved == doc
    assert saved["utterances"][0]["translations"] == {"es": "[es] Tone 660."}
    assert saved["dropped"][0]["stage"] == "asr"
    assert set(saved["utterances"][0]["latency"]) == {"asr", "mt", "tts_first", "end_to_first_audio", "first_audio_out"}


async def test_outputs_are_written_in_order_with_offsets(tmp_path):
    alice = track("alice", "en", silence(0.2), tone(440, 0.5), silence(0.6), tone(660, 0.5), silence(0.6))
    result = await run_cascade_on_tracks(fake_engines(), [alice], ["es"], segmenter=PARAMS)
    doc = write_outputs(result, "es", tmp_path / "out.wav", None, out_rate=16000)
    import wave

    with wave.open(str(tmp_path / "out.wav")) as w:
        assert w.getframerate() == 16000
        frames = w.getnframes()
    outs = [u["output"] for u in doc["utterances"]]
    assert outs[0]["start"] == 0.0 and outs[1]["start"] > outs[0]["end"]
    assert abs(outs[-1]["end"] - frames / 16000) < 0.01
    stats = LatencyStats.from_utterances(r.utterance for r in result.utterances).as_dict()
    assert stats["end_to_first_audio"]["n"] == 2 and stats["overhead"]["n"] == 2
