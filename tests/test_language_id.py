"""Spoken-language identification (``speaks: auto``), with fake engines.

``ToneLanguageASREngine`` "speaks" each tone in a language with a given probability, so
the tests decide what identification reports and check what the processor makes of it:
which language each utterance is labelled with, when the language settles, when it is
identified again, and that a language someone set is never touched.
"""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.frames.frames import Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
from pipeline.frames import (
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
)
from pipeline.participants import ParticipantState
from pipeline.processors.asr import ASRProcessor
from pipeline.processors.language_id import LanguageIDParams, LanguageIDProcessor
from pipeline.processors.recognition_feedback import RecognitionFeedbackProcessor
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams
from tests.fakes import ToneASREngine, ToneLanguageASREngine, fake_engines, silence, tone


def utterance(user: str, freq: float, seconds: float = 1.2) -> UtteranceAudioFrame:
    u = Utterance(user_id=user, language="auto", start=0.0, end=seconds)
    u.mark("speech_end")
    return UtteranceAudioFrame(u, tone(freq, seconds).tobytes(), 16000)


async def identify(
    processor: LanguageIDProcessor, *frames: Frame, gap: float = 0.0
) -> list[str]:
    """Run the frames through ``processor``; the language each utterance came out with."""
    sent: list[Frame] = []
    for frame in frames:
        sent.append(frame)
        if gap:
            sent.append(SleepFrame(sleep=gap))
    down, _ = await run_test(processor, frames_to_send=sent)
    return [f.utterance.language for f in down if isinstance(f, UtteranceAudioFrame)]


def auto_room(*members: str) -> Room:
    room = Room(["en", "es"], default_language="auto")
    for member in members:
        room.join(member)
    return room


# -- settling -------------------------------------------------------------------------


async def test_one_very_confident_utterance_settles_the_language():
    engine = ToneLanguageASREngine({440: ("es", 0.95)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    assert await identify(lid, utterance("alice", 440), utterance("alice", 440)) == ["es", "es"]
    assert engine.detections == [440]  # settled after the first: no second model call
    alice = room.participants["alice"]
    assert (alice.language, alice.language_detected) == ("es", True)
    assert lid.settled_language("alice") == "es"


async def test_two_agreeing_confident_utterances_settle_the_language():
    engine = ToneLanguageASREngine({440: ("es", 0.6)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    languages = await identify(lid, *(utterance("alice", 440) for _ in range(3)))
    assert languages == ["es", "es", "es"]
    assert engine.detections == [440, 440]
    assert lid.settled_language("alice") == "es"


async def test_disagreeing_detections_do_not_settle():
    engine = ToneLanguageASREngine({440: ("es", 0.6), 660: ("fr", 0.6)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    frames = [utterance("alice", f) for f in (440, 660, 440)]
    assert await identify(lid, *frames) == ["es", "fr", "es"]
    assert engine.detections == [440, 660, 440]
    assert lid.settled_language("alice") is None
    assert room.participants["alice"].language == "es"  # the latest guess, marked as detected


async def test_unsure_detections_keep_the_fallback_until_a_confident_one():
    engine = ToneLanguageASREngine({440: ("fr", 0.3), 550: ("es", 0.9)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    frames = [utterance("alice", f) for f in (440, 550, 440)]
    # Below the threshold: the fallback (English, which the engine knows); then Spanish
    # settles and sticks even for the tone identification was unsure about.
    assert await identify(lid, *frames) == ["en", "es", "es"]
    assert engine.detections == [440, 550]


async def test_an_unsure_detection_keeps_the_language_so_far():
    engine = ToneLanguageASREngine({440: ("es", 0.6), 660: ("fr", 0.3)})
    lid = LanguageIDProcessor(engine, auto_room("alice"))
    frames = [utterance("alice", f) for f in (440, 660)]
    assert await identify(lid, *frames) == ["es", "es"]


async def test_short_utterances_label_themselves_but_never_settle():
    engine = ToneLanguageASREngine({440: ("es", 0.95)})
    lid = LanguageIDProcessor(engine, auto_room("alice"), LanguageIDParams(min_speech_s=1.0))
    frames = [utterance("alice", 440, seconds=0.5) for _ in range(3)]
    assert await identify(lid, *frames) == ["es", "es", "es"]
    assert engine.detections == [440, 440, 440]
    assert lid.settled_language("alice") is None


async def test_candidates_narrow_what_may_be_identified():
    # fr 0.5, en 0.25, es 0.25: among en and es only, the best is below 0.5.
    engine = ToneLanguageASREngine({440: ("fr", 0.5)})
    params = LanguageIDParams(candidates=("es",), threshold=0.2)
    lid = LanguageIDProcessor(engine, auto_room("alice"), params)
    assert await identify(lid, utterance("alice", 440)) == ["es"]


# -- explicit settings win ------------------------------------------------------------


async def test_a_set_language_is_never_identified():
    engine = ToneLanguageASREngine({440: ("es", 0.95)})
    room = auto_room()
    room.join("alice", language="fr")
    lid = LanguageIDProcessor(engine, room)
    assert await identify(lid, utterance("alice", 440), utterance("alice", 440)) == ["fr", "fr"]
    assert engine.detections == []


async def test_setting_a_language_overrides_the_identified_one():
    engine = ToneLanguageASREngine({440: ("es", 0.95)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    assert await identify(lid, utterance("alice", 440)) == ["es"]
    room.join("alice", language="en")  # /language en, or the page's "I speak"
    assert await identify(lid, utterance("alice", 440)) == ["en"]
    assert engine.detections == [440]
    assert room.participants["alice"].language_detected is False
    assert lid.settled_language("alice") is None


async def test_setting_auto_again_identifies_again():
    engine = ToneLanguageASREngine({440: ("es", 0.95), 660: ("fr", 0.95)})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room)
    assert await identify(lid, utterance("alice", 440)) == ["es"]
    room.join("alice", language="auto")
    assert await identify(lid, utterance("alice", 660)) == ["fr"]
    assert engine.detections == [440, 660]


# -- engines that cannot identify -----------------------------------------------------


async def test_an_engine_without_identification_gets_the_configured_fallback():
    engine = ToneASREngine()
    assert not engine.detects_language
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room, LanguageIDParams(fallback="es"))
    assert await identify(lid, utterance("alice", 440), utterance("alice", 550)) == ["es", "es"]
    assert room.participants["alice"].language == "es"


async def test_without_a_configured_fallback_english_is_assumed_where_known():
    lid = LanguageIDProcessor(ToneASREngine(), auto_room("alice"))
    assert await identify(lid, utterance("alice", 440)) == ["en"]


async def test_a_failing_identification_costs_only_the_guess():
    class BrokenIdentification(ToneLanguageASREngine):
        def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
            raise RuntimeError("model exploded")

    lid = LanguageIDProcessor(BrokenIdentification(), auto_room("alice"))
    assert await identify(lid, utterance("alice", 440)) == ["en"]


# -- re-checking when recognition keeps failing ---------------------------------------


async def test_recognition_failing_in_the_identified_language_identifies_again():
    engine = ToneLanguageASREngine({440: ("es", 0.95), 660: ("en", 0.95)}, empty_on={550})
    room = auto_room("alice")
    lid = LanguageIDProcessor(engine, room, LanguageIDParams(recheck_after=2))
    chain = Pipeline([lid, ASRProcessor(engine), RecognitionFeedbackProcessor(lid)])
    frames = [utterance("alice", f) for f in (440, 550, 550, 660, 440)]
    sent: list[Frame] = []
    for frame in frames:
        sent += [frame, SleepFrame(sleep=0.15)]  # each utterance through ASR before the next
    down, _ = await run_test(chain, frames_to_send=sent)
    dropped = [f for f in down if isinstance(f, UtteranceDroppedFrame)]
    assert [f.stage for f in dropped] == ["asr", "asr"]
    # Settled on Spanish at once; two utterances with no words reopen the question; the
    # next is identified (English, settling again) and the one after is not.
    assert engine.detections == [440, 660]
    heard = [(f.utterance.language, f.text) for f in down if isinstance(f, UtteranceTranscriptionFrame)]
    assert heard == [("es", "Tone 440."), ("en", "Tone 660."), ("en", "Tone 440.")]


async def test_recognition_failures_never_touch_a_set_language():
    engine = ToneLanguageASREngine({440: ("es", 0.95)})
    room = auto_room()
    room.join("alice", language="fr")
    lid = LanguageIDProcessor(engine, room)
    for _ in range(5):
        lid.recognition_result("alice", False)
    assert await identify(lid, utterance("alice", 440)) == ["fr"]
    assert engine.detections == []


# -- participants ---------------------------------------------------------------------


async def test_state_is_per_participant_and_released_with_them():
    engine = ToneLanguageASREngine({440: ("es", 0.95), 660: ("fr", 0.95)})
    room = auto_room("alice", "bob")
    lid = LanguageIDProcessor(engine, room)
    assert isinstance(lid, ParticipantState)
    languages = await identify(lid, utterance("alice", 440), utterance("bob", 660))
    assert sorted(languages) == ["es", "fr"]  # two lanes: either may finish first
    assert lid.holds_participant("alice") and lid.holds_participant("bob")
    await lid.release_participant("alice")
    assert not lid.holds_participant("alice") and lid.holds_participant("bob")
    assert lid.settled_language("bob") == "fr"


# -- the whole cascade ----------------------------------------------------------------


async def test_an_auto_speaker_is_interpreted_from_the_identified_language():
    engines = fake_engines(asr=ToneLanguageASREngine({440: ("es", 0.95)}))
    pcm = np.concatenate([silence(0.2), tone(440, 1.2), silence(0.6), tone(440, 1.2), silence(0.6)])
    result = await run_cascade_on_tracks(
        engines,
        [SpeakerTrack("alice", pcm, "auto")],
        ["en", "es"],
        segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0),
    )
    assert [r.utterance.language for r in result.utterances] == ["es", "es"]
    # Spanish speech is interpreted into English only: the room knows what she speaks.
    assert [r.translations for r in result.utterances] == [{"en": "[en] Tone 440."}] * 2
    assert result.errors == [] and result.dropped == []


@pytest.mark.parametrize("language", ["auto", "AUTO"])
def test_auto_is_recognised_in_any_case(language: str):
    from pipeline.languages import is_auto

    assert is_auto(language) and not is_auto("en") and not is_auto(None)
