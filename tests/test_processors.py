"""Each stage processor, driven by pipecat's run_test with fake engines."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.frames.frames import ErrorFrame, TextFrame, UserAudioRawFrame
from pipecat.tests.utils import SleepFrame, run_test

from pipeline.frames import (
    CaptionFrame,
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    TranslationsDoneFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.processors.asr import ASRProcessor
from pipeline.processors.audio_input import AudioInputProcessor
from pipeline.processors.denoise import DenoiseProcessor
from pipeline.processors.translate import TranslationProcessor
from pipeline.processors.tts import TTSProcessor
from pipeline.processors.vad import VADSegmenterProcessor
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams, UtteranceSegmenter
from tests.fakes import (
    BeepTTSEngine,
    EnergyVADEngine,
    EnergyVADStream,
    HalvingDenoiseEngine,
    TagMTEngine,
    ToneASREngine,
    dominant_frequency,
    silence,
    tone,
)


def utterance_frame(user: str, freq: float, seconds: float = 0.5, language: str = "en") -> UtteranceAudioFrame:
    u = Utterance(user_id=user, language=language, start=0.0, end=seconds)
    u.mark("speech_end")
    return UtteranceAudioFrame(u, tone(freq, seconds).tobytes(), 16000)


def transcription(user: str, text: str, language: str = "en") -> UtteranceTranscriptionFrame:
    u = Utterance(user_id=user, language=language, start=0.0, end=1.0)
    u.mark("speech_end")
    u.mark("asr_done")
    return UtteranceTranscriptionFrame(text=text, user_id=user, timestamp="", utterance=u)


def audio_frames(user: str, pcm: np.ndarray, rate: int = 16000, channels: int = 1, ms: int = 20):
    step = rate * ms // 1000 * channels
    return [
        UserAudioRawFrame(audio=pcm[i : i + step].tobytes(), sample_rate=rate, num_channels=channels, user_id=user)
        for i in range(0, len(pcm), step)
    ]


# -- ASR -----------------------------------------------------------------------


async def test_asr_transcribes_and_restores_punctuation():
    frame = utterance_frame("alice", 440)
    down, _ = await run_test(
        ASRProcessor(ToneASREngine()),
        frames_to_send=[frame],
        expected_down_frames=[UtteranceAudioFrame, UtteranceTranscriptionFrame, CaptionFrame],
    )
    result = down[1]
    assert result.text == "Tone 440."
    assert result.user_id == "alice"
    assert result.utterance is frame.utterance
    caption = down[2]
    assert (caption.text, caption.final, caption.translations) == ("Tone 440.", False, {})
    assert "asr_done" in frame.utterance.marks and frame.utterance.compute["asr"] >= 0


async def test_asr_empty_transcript_drops_the_utterance():
    down, _ = await run_test(
        ASRProcessor(ToneASREngine(empty_on={440})),
        frames_to_send=[utterance_frame("alice", 440)],
        expected_down_frames=[UtteranceAudioFrame, UtteranceDroppedFrame],
    )
    assert down[1].stage == "asr"


async def test_asr_failure_reports_and_keeps_going():
    engine = ToneASREngine(fail_on={300})
    bad, good = utterance_frame("alice", 300), utterance_frame("alice", 600)
    down, up = await run_test(
        ASRProcessor(engine),
        frames_to_send=[bad, good],
        expected_down_frames=[
            UtteranceAudioFrame, UtteranceDroppedFrame, UtteranceAudioFrame, UtteranceTranscriptionFrame, CaptionFrame,
        ],
        expected_up_frames=[ErrorFrame],
    )
    assert "cannot recognise 300 Hz" in up[0].error
    assert not up[0].fatal
    assert down[1].utterance is bad.utterance
    assert down[3].text == "Tone 600."


async def test_a_slow_speaker_does_not_hold_up_another():
    # alice's first utterance takes 0.8 s to recognise, bob's is instant.
    engine = ToneASREngine(delays={300: 0.8})
    frames = [utterance_frame("alice", 300), utterance_frame("alice", 500), utterance_frame("bob", 700)]
    down, _ = await run_test(ASRProcessor(engine), frames_to_send=frames)
    texts = [f.text for f in down if isinstance(f, UtteranceTranscriptionFrame)]
    assert texts == ["Tone 700.", "Tone 300.", "Tone 500."]  # bob first; alice in her own order


async def test_asr_backlog_is_bounded_per_speaker():
    engine = ToneASREngine(delays={300: 0.5})
    # 300 Hz is being recognised (0.5 s) while four more arrive; only two may wait.
    frames = [utterance_frame("alice", 300), SleepFrame(0.1)] + [utterance_frame("alice", 400 + 100 * i) for i in range(4)]
    down, up = await run_test(ASRProcessor(engine, max_pending=2), frames_to_send=frames)
    dropped = [f for f in down if isinstance(f, UtteranceDroppedFrame)]
    texts = [f.text for f in down if isinstance(f, UtteranceTranscriptionFrame)]
    assert len(dropped) == 2 and all("behind" in d.reason for d in dropped)
    assert texts == ["Tone 300.", "Tone 600.", "Tone 700."]  # the oldest waiting ones were dropped
    assert len([f for f in up if isinstance(f, ErrorFrame)]) == 2


# -- MT ------------------------------------------------------------------------


async def test_translation_into_every_other_listener_language():
    room = Room(["en", "es", "fr"])
    room.join("alice", language="en")
    frame = transcription("alice", "Hello there.")
    down, _ = await run_test(
        TranslationProcessor(TagMTEngine(), room),
        frames_to_send=[frame],
        expected_down_frames=[
            UtteranceTranscriptionFrame, UtteranceTranslationFrame, UtteranceTranslationFrame,
            TranslationsDoneFrame, CaptionFrame,
        ],
    )
    assert [(f.target_language, f.text) for f in down[1:3]] == [("es", "[es] Hello there."), ("fr", "[fr] Hello there.")]
    both = {"es": "[es] Hello there.", "fr": "[fr] Hello there."}
    assert down[3].translations == both
    assert (down[4].text, down[4].final, down[4].translations) == ("Hello there.", True, both)
    assert "mt_done" in frame.utterance.marks


async def test_translation_passes_other_frames_through():
    room = Room(["es"])
    down, _ = await run_test(
        TranslationProcessor(TagMTEngine(), room),
        frames_to_send=[TextFrame("not a transcript")],
        expected_down_frames=[TextFrame],
    )
    assert down[0].text == "not a transcript"


async def test_translation_of_unsupported_pair_is_an_error_not_a_crash():
    room = Room(["de"])
    down, up = await run_test(
        TranslationProcessor(TagMTEngine(), room),
        frames_to_send=[transcription("alice", "Hello."), transcription("alice", "Again.")],
    )
    assert len([f for f in up if isinstance(f, ErrorFrame)]) == 2
    # The transcript is still captioned, with no translation; nothing claims audio will come.
    finals = [f for f in down if isinstance(f, CaptionFrame)]
    assert [(f.text, f.final, f.translations) for f in finals] == [("Hello.", True, {}), ("Again.", True, {})]
    assert [f.translations for f in down if isinstance(f, TranslationsDoneFrame)] == [{}, {}]


# -- TTS -----------------------------------------------------------------------


async def test_tts_streams_chunks_then_done():
    room = Room(["es"])
    room.join("alice", language="en")
    room.participants["alice"].voice = "alice-voice"
    engine = BeepTTSEngine()
    u = Utterance(user_id="alice", language="en", start=0, end=1)
    u.mark("speech_end")
    u.mark("asr_done")
    u.mark("mt_done")
    frame = UtteranceTranslationFrame(text="uno dos tres", user_id="alice", timestamp="", utterance=u, target_language="es")
    down, _ = await run_test(
        TTSProcessor(engine, room),
        frames_to_send=[frame],
        expected_down_frames=[UtteranceTranslationFrame] + [InterpretationAudioFrame] * 3 + [InterpretationDoneFrame],
    )
    chunk = down[1]
    assert chunk.sample_rate == 24000 and chunk.target_language == "es" and chunk.utterance is u
    assert engine.voices == ["alice-voice"]
    assert {"first_tts_audio", "tts_done"} <= set(u.marks)
    assert u.marks["first_tts_audio"] <= u.marks["tts_done"]
    assert u.compute["tts"] >= 0 and "tts_first" in u.compute
    assert set(u.latencies()) == {"asr", "mt", "tts_first", "end_to_first_audio"}


async def test_tts_failure_ends_only_that_interpretation_with_an_error():
    room = Room(["es"])
    frames = []
    for text in ("uno BOOM", "dos"):
        u = Utterance(user_id="alice", language="en", start=0, end=1)
        frames.append(UtteranceTranslationFrame(text=text, user_id="alice", timestamp="", utterance=u, target_language="es"))
    down, up = await run_test(TTSProcessor(BeepTTSEngine(fail_on="BOOM"), room), frames_to_send=frames)
    kinds = [type(f) for f in down]
    assert kinds == [UtteranceTranslationFrame, InterpretationDoneFrame, UtteranceTranslationFrame,
                     InterpretationAudioFrame, InterpretationDoneFrame]
    assert "synthesis failed" in up[0].error
    assert "synthesis failed" in down[1].error and down[4].error is None


# -- VAD / segmentation ----------------------------------------------------------


async def test_vad_cuts_utterances_per_speaker():
    room = Room(["es"])
    room.join("alice", language="en")
    room.join("bob", language="es")
    params = SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0)
    a = np.concatenate([silence(0.3), tone(440, 0.6), silence(0.6), tone(660, 0.5), silence(0.5)])
    b = np.concatenate([silence(0.5), tone(550, 0.8), silence(0.8)])
    fa, fb = audio_frames("alice", a), audio_frames("bob", b)
    interleaved = [f for pair in zip(fa, fb, strict=False) for f in pair] + fa[len(fb):] + fb[len(fa):]
    down, _ = await run_test(VADSegmenterProcessor(EnergyVADEngine(), room, params), frames_to_send=interleaved)
    utts = [f for f in down if isinstance(f, UtteranceAudioFrame)]
    by_user = {}
    for f in utts:
        by_user.setdefault(f.user_id, []).append(f)
    def freq(f):
        return round(dominant_frequency(np.frombuffer(f.audio, np.int16)) / 10) * 10

    assert [freq(f) for f in by_user["alice"]] == [440, 660]
    assert [freq(f) for f in by_user["bob"]] == [550]
    assert by_user["bob"][0].language == "es" and by_user["alice"][0].language == "en"
    first = by_user["alice"][0].utterance
    assert abs(first.start - 0.3) < 0.07 and abs(first.end - 0.9) < 0.07
    assert not any(isinstance(f, UserAudioRawFrame) for f in down)  # raw audio is consumed


async def test_vad_flushes_trailing_speech_at_end():
    room = Room(["es"])
    pcm = np.concatenate([silence(0.2), tone(440, 0.7)])  # no silence after: input just ends
    down, _ = await run_test(VADSegmenterProcessor(EnergyVADEngine(), room), frames_to_send=audio_frames("alice", pcm))
    utts = [f for f in down if isinstance(f, UtteranceAudioFrame)]
    assert len(utts) == 1 and utts[0].utterance.duration > 0.5


async def test_vad_splits_a_monologue():
    room = Room(["es"])
    params = SegmenterParams(max_utterance_s=2.0, preroll_ms=0, postroll_ms=0)
    pcm = np.concatenate([tone(440, 5.0), silence(0.8)])
    down, _ = await run_test(VADSegmenterProcessor(EnergyVADEngine(), room, params), frames_to_send=audio_frames("alice", pcm))
    utts = [f.utterance for f in down if isinstance(f, UtteranceAudioFrame)]
    assert len(utts) >= 3
    assert all(u.duration <= 2.0 + 0.032 + 1e-6 for u in utts)  # one VAD window of slack
    assert utts[0].split and not utts[-1].split


# -- input normalisation and denoise ---------------------------------------------


async def test_audio_input_resamples_and_downmixes():
    room = Room(["es"])
    mono48 = tone(440, 1.0, rate=48000)
    stereo = np.stack([mono48, mono48], axis=1).reshape(-1)
    down, _ = await run_test(AudioInputProcessor(room), frames_to_send=audio_frames("alice", stereo, rate=48000, channels=2))
    out = np.concatenate([np.frombuffer(f.audio, np.int16) for f in down])
    assert all(f.sample_rate == 16000 and f.num_channels == 1 for f in down)
    assert abs(len(out) - 16000) < 400  # the streaming resampler may hold a few ms back
    assert abs(dominant_frequency(out[2000:]) - 440) < 5
    assert "alice" in room.participants


async def test_audio_input_rejects_malformed_frames_and_keeps_running():
    room = Room(["es"])
    good = tone(440, 0.02).tobytes()
    frames = [
        UserAudioRawFrame(audio=b"\x01\x02\x03", sample_rate=16000, num_channels=1, user_id="alice"),
        UserAudioRawFrame(audio=good, sample_rate=16000, num_channels=1, user_id=""),
        UserAudioRawFrame(audio=b"\x00" * (16000 * 2 * 11), sample_rate=16000, num_channels=1, user_id="alice"),
        UserAudioRawFrame(audio=good, sample_rate=16000, num_channels=1, user_id="alice"),
    ]
    down, up = await run_test(AudioInputProcessor(room), frames_to_send=frames)
    assert [f.audio for f in down] == [good]
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 3
    assert "whole number" in errors[0] and "user_id" in errors[1] and "more than" in errors[2]


async def test_denoise_uses_one_filter_per_participant():
    engine = HalvingDenoiseEngine()
    fa = audio_frames("alice", tone(440, 0.2))
    fb = audio_frames("bob", tone(660, 0.1))
    down, _ = await run_test(DenoiseProcessor(engine), frames_to_send=fa + [SleepFrame(0.05)] + fb)
    assert len(engine.filters) == 2
    assert sorted(f.samples for f in engine.filters) == [1600, 3200]
    assert all(f.started_at == 16000 for f in engine.filters)
    alice = np.concatenate([np.frombuffer(f.audio, np.int16) for f in down if f.user_id == "alice"])
    assert len(alice) == 3200
    assert np.abs(alice).max() == pytest.approx(np.abs(tone(440, 0.2)).max() // 2, abs=1)


async def test_a_quiet_line_is_not_denoised():
    engine = HalvingDenoiseEngine()
    hiss = (tone(1000, 0.2, amplitude=0.0005)).astype(np.int16)  # about -66 dBFS
    processor = DenoiseProcessor(engine)
    down, _ = await run_test(processor, frames_to_send=audio_frames("alice", hiss) + [SleepFrame(0.05)]
                             + audio_frames("alice", tone(440, 0.1)))
    out = np.concatenate([np.frombuffer(f.audio, np.int16) for f in down])
    assert np.array_equal(out[: len(hiss)], hiss)  # passed on untouched, no model call
    assert engine.filters[0].samples == 1600  # only the tone went through the filter
    assert processor.skipped >= 1 and processor.denoised >= 1


def test_digital_silence_never_reaches_the_vad_model():
    stream = EnergyVADStream()
    calls = []
    score = stream.speech_probability
    stream.speech_probability = lambda w: calls.append(1) or score(w)  # type: ignore[method-assign]
    seg = UtteranceSegmenter(stream, SegmenterParams(min_silence_ms=300))
    seg.push(silence(1.0))
    assert calls == []
    seg.push(tone(440, 0.5))
    assert len(calls) > 10


async def test_processors_forward_unrelated_frames_in_order():
    room = Room(["es"])
    frames = [TextFrame("a"), TextFrame("b")]
    for proc in (ASRProcessor(ToneASREngine()), TTSProcessor(BeepTTSEngine(), room), DenoiseProcessor(HalvingDenoiseEngine())):
        down, _ = await run_test(proc, frames_to_send=frames, expected_down_frames=[TextFrame, TextFrame])
        assert [f.text for f in down] == ["a", "b"]
    await asyncio.sleep(0)
