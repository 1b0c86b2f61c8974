"""Chaos in the engines: a stage that hangs, raises or answers nothing, and a child
process killed mid-session. Each time the room goes on with the next utterance, and
file mode always ends."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.engines.calls import StageTimeouts
from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams
from tests.fakes import BeepTTSEngine, TagMTEngine, ToneASREngine, fake_engines, silence, tone

FAST = InterpretationParams(
    segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0),
    timeouts=StageTimeouts(base_s=0.5, per_audio_s=0.5, per_char_s=0.01),
    streaming=None,
    max_pending=None,
)


def speech(*freqs: int) -> SpeakerTrack:
    parts = [silence(0.2)]
    for freq in freqs:
        parts += [tone(freq, 0.5), silence(0.6)]
    return SpeakerTrack("alice", np.concatenate(parts), "en")


class HangingASR(ToneASREngine):
    """Never returns for 300 Hz (a model stuck on one input)."""

    def transcribe(self, pcm, sample_rate, language):  # type: ignore[no-untyped-def]
        transcript = super().transcribe(pcm, sample_rate, language)
        if "300" in transcript.text:
            time.sleep(3600)
        return transcript


async def test_a_hung_recognition_costs_its_utterance_and_the_room_goes_on():
    started = time.monotonic()
    result = await run_cascade_on_tracks(fake_engines(asr=HangingASR()), [speech(300, 600)], ["es"], params=FAST)
    assert time.monotonic() - started < 30  # file mode ends; the hung thread does not hold it
    assert [r.transcript for r in result.utterances] == ["Tone 600."]
    assert any("took longer than" in e for e in result.errors)
    assert [r.dropped[0] for r in result.dropped if r.dropped] == ["asr"]


class FlakyMT(TagMTEngine):
    def translate(self, texts, source, target):  # type: ignore[no-untyped-def]
        if "300" in texts[0]:
            raise RuntimeError("the model fell over")
        return super().translate(texts, source, target)


class SilentTTS(BeepTTSEngine):
    """Answers with no audio for one sentence (a broken voice, a dead child process)."""

    def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
        if "300" in text:
            return iter(())
        return super().synthesize(text, language, voice)


async def test_a_raising_translation_and_a_silent_synthesis_are_errors_not_silence():
    engines = fake_engines(mt=FlakyMT(), tts=SilentTTS())
    result = await run_cascade_on_tracks(engines, [speech(300, 600)], ["es"], params=FAST)
    by_text = {r.transcript: r for r in result.utterances}
    assert by_text["Tone 300."].translations == {} and by_text["Tone 300."].spoken == ()
    assert by_text["Tone 600."].translations == {"es": "[es] Tone 600."} and by_text["Tone 600."].spoken == ("es",)
    assert any("fell over" in e for e in result.errors)
    assert set(result.audio) == {by_text["Tone 600."].id}


async def test_a_hung_synthesis_is_given_up_after_its_deadline():
    class HangingTTS(BeepTTSEngine):
        def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
            if "300" in text:
                yield tone(880, 0.1, self.sample_rate)
                time.sleep(3600)
            yield from super().synthesize(text, language, voice)

    started = time.monotonic()
    result = await run_cascade_on_tracks(fake_engines(tts=HangingTTS()), [speech(300, 600)], ["es"], params=FAST)
    assert time.monotonic() - started < 30
    by_text = {r.transcript: r for r in result.utterances}
    assert by_text["Tone 300."].spoken == () and by_text["Tone 600."].spoken == ("es",)
    assert any("no audio for" in e for e in result.errors)


@pytest.mark.slow
async def test_an_apertium_tool_killed_mid_session_does_not_cost_the_next_utterance():
    from pipeline.engines.mt.apertium import ApertiumMTEngine

    mt = ApertiumMTEngine()
    mt.load()
    mt.translate(["Hello."], "en", "es")  # its pipeline is running, as in a room that has talked
    try:
        killed: list[int] = []

        class KillsBetween(ToneASREngine):
            def transcribe(self, pcm, sample_rate, language):  # type: ignore[no-untyped-def]
                transcript = super().transcribe(pcm, sample_rate, language)
                if "600" in transcript.text and not killed:
                    tools = mt.tool_ids("en", "es")
                    killed.append(tools[len(tools) // 2])
                    os.kill(killed[0], signal.SIGKILL)  # a tool of the pipeline dies between utterances
                return transcript

        engines = fake_engines(asr=KillsBetween(), mt=mt)
        result = await run_cascade_on_tracks(engines, [speech(300, 600)], ["es"], params=FAST)
        assert killed
        assert [r.translations["es"] for r in result.utterances] == ["Tono 300.", "Tono 600."]
        assert result.errors == []
    finally:
        mt.close()
