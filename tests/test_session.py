"""The interpretation session every transport uses: participants, departures, consent,
results as frames, and the dependency rule that transports import no processor."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import numpy as np
import pytest
from pipecat.tests.utils import run_test

from pipeline.file_mode import FileTransport
from pipeline.frames import (
    CaptionFrame,
    InterpretationDoneFrame,
    InterpretationResultFrame,
    TranslationsDoneFrame,
    Utterance,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
)
from pipeline.participants import ParticipantState
from pipeline.processors.results import InterpretationResultProcessor
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, InterpretationSession, SessionFactory
from tests.fakes import CloningBeepTTSEngine, fake_engines, silence, tone
from tests.waiting import wait_for
from voices.consent import VoiceConsent
from voices.store import VoiceStore

ROOT = Path(__file__).resolve().parent.parent
PARAMS = InterpretationParams(
    segmenter=SegmenterParams(min_silence_ms=300, preroll_ms=0, postroll_ms=0),
    listener_languages=["es"],
    max_pending=None,
)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_transports_import_no_processor_module():
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in imports_of(path) if n.startswith(("pipeline.processors", "voices.capture_processor")))
        for path in sorted((ROOT / "transports").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}
    # ...and they build on the session: the room server (WebRTC, and phone callers, who
    # join its rooms), Discord channels and file mode.
    users = [p for p in [*(ROOT / "transports").rglob("*.py"), ROOT / "pipeline" / "file_mode.py"] if "pipeline.session" in imports_of(p)]
    assert {p.parent.name for p in users} >= {"webrtc", "discord", "pipeline"}
    assert "transports.webrtc.transport" in imports_of(ROOT / "transports" / "telephony" / "twilio.py")


async def started(session: InterpretationSession) -> FileTransport:
    await session.start()
    transport = session.transport
    assert isinstance(transport, FileTransport)
    await transport.input().ready.wait()
    return transport


async def feed(transport: FileTransport, user: str, pcm: np.ndarray) -> None:
    for i in range(0, len(pcm), 320):
        await transport.input().feed(user, pcm[i : i + 320])
        await asyncio.sleep(0)


async def test_leaving_mid_sentence_interprets_the_last_words_then_releases_every_stage():
    session = InterpretationSession(fake_engines(), FileTransport(), PARAMS)
    await session.join("alice", language="en")
    await session.join("bob", language="en")
    transport = await started(session)
    try:
        await feed(transport, "alice", np.concatenate([silence(0.1), tone(440, 0.5)]))  # no pause: still talking
        await feed(transport, "bob", np.concatenate([silence(0.1), tone(660, 0.5), silence(0.4)]))
        await wait_for(lambda: any(r.user_id == "bob" for r in transport.output().results))
        holders = session.state_holders()
        assert all(isinstance(h, ParticipantState) for h in holders)
        assert "VADSegmenterProcessor" in session.holding("alice")  # her speech is in the segmenter

        await session.leave("alice")

        alice = [r for r in transport.output().results if r.user_id == "alice"]
        assert [(r.transcript, r.translations, r.spoken) for r in alice] == [
            ("Tone 440.", {"es": "[es] Tone 440."}, ("es",))
        ]
        assert session.holding("alice") == [] and "alice" not in session.room.participants
        assert session.holding("bob") != [] and "bob" in session.room.participants  # untouched
        # Every stage that holds anyone's state answered through the protocol.
        names = {type(h).__name__ for h in holders}
        assert names >= {
            "AudioInputProcessor", "DenoiseProcessor", "VADSegmenterProcessor", "ASRProcessor",
            "TranslationProcessor", "TTSProcessor", "InterpretationResultProcessor",
        }
    finally:
        await session.stop()


async def test_leaving_without_draining_drops_what_was_unsaid():
    session = InterpretationSession(fake_engines(), FileTransport(), PARAMS)
    await session.join("alice", language="en")
    transport = await started(session)
    try:
        await feed(transport, "alice", np.concatenate([silence(0.1), tone(440, 0.5)]))
        await asyncio.sleep(0.2)
        await session.leave("alice", drain=False)
        assert session.holding("alice") == []
        await asyncio.sleep(0.3)
        assert transport.output().results == []
    finally:
        await session.stop()


async def test_a_session_that_cannot_start_is_an_error_and_stop_is_idempotent():
    session = InterpretationSession(fake_engines(), FileTransport(), PARAMS)
    await started(session)
    await session.stop()
    await session.stop()
    assert session.ended and not session.running


async def test_consent_changes_apply_at_once_in_every_session_of_that_person(tmp_path):
    engines = fake_engines(tts=CloningBeepTTSEngine())
    consent = VoiceConsent(VoiceStore(tmp_path / "voices", vad=engines.vad), engine=engines.tts)
    await consent.enroll("alice", np.concatenate([tone(200, 4.0), tone(300, 3.0)]))
    factory = SessionFactory(engines, PARAMS, consent=consent)
    one = factory.create(FileTransport(), name="one")
    two = factory.create(FileTransport(), name="two")
    for session in (one, two):
        await session.join("p-" + session.name, identity="alice")
        await session.join("anon-" + session.name)
        await started(session)
    try:
        assert one.room.voice_for("p-one").source == "enrolled"
        assert two.room.voice_for("p-two").source == "enrolled"
        await one.set_voice_allowed("p-one", False)  # the page's switch, for a known person
        assert one.room.voice_for("p-one") is None and two.room.voice_for("p-two") is None
        assert not await consent.allowed("alice")  # remembered
        await two.set_voice_allowed("anon-two", False)  # anonymous: this session only
        assert two.room.participants["anon-two"].voice_opt_out
        assert not one.room.participants["anon-one"].voice_opt_out
        await consent.set_allowed("alice", True)
        assert one.room.voice_for("p-one").source == "enrolled"
        await consent.forget("alice")
        assert one.room.voice_for("p-one") is None and two.room.voice_for("p-two") is None
        assert list((tmp_path / "voices" / "tensors").iterdir()) == []
    finally:
        await one.stop()
        await two.stop()
    await consent.set_allowed("alice", False)  # stopped sessions are no longer told
    assert one.room.participants["p-one"].voice_opt_out is False


async def test_joining_with_cloning_refused_or_after_an_opt_out_gives_the_neutral_voice(tmp_path):
    engines = fake_engines(tts=CloningBeepTTSEngine())
    consent = VoiceConsent(VoiceStore(tmp_path / "voices", vad=engines.vad), engine=engines.tts)
    await consent.enroll("bob", np.concatenate([tone(200, 4.0), tone(300, 3.0)]))
    await consent.set_allowed("bob", False)
    session = SessionFactory(engines, PARAMS, consent=consent).create(FileTransport(), name="s")
    bob = await session.join("b", identity="bob")
    carol = await session.join("c", clone_voice=False)
    assert bob.voice is None and bob.voice_opt_out
    assert carol.voice is None and carol.voice_opt_out


def utterance(user: str = "alice") -> Utterance:
    return Utterance(user_id=user, language="en", start=0.0, end=1.0)


def transcript(u: Utterance, text: str) -> UtteranceTranscriptionFrame:
    return UtteranceTranscriptionFrame(text=text, user_id=u.user_id, timestamp="", utterance=u)


async def test_a_result_comes_once_every_language_has_ended_even_if_one_failed():
    u = utterance()
    frames = [
        transcript(u, "Hello."),
        TranslationsDoneFrame(u, {"es": "Hola.", "fr": "Salut."}),
        InterpretationDoneFrame(u, "es"),
        InterpretationDoneFrame(u, "fr", error="tts failed"),
    ]
    down, _ = await run_test(InterpretationResultProcessor(), frames_to_send=frames)
    results = [f.result for f in down if isinstance(f, InterpretationResultFrame)]
    assert len(results) == 1 and down[-1].result is results[0]
    result = results[0]
    assert (result.transcript, result.translations, result.spoken, result.dropped) == (
        "Hello.", {"es": "Hola.", "fr": "Salut."}, ("es",), None
    )
    assert result.summary()["transcript"] == "Hello."


async def test_a_dropped_utterance_gets_its_result_and_a_closing_caption():
    u, silent = utterance(), utterance("bob")
    frames = [
        transcript(u, "Hello."),
        CaptionFrame(u, "Hello."),
        UtteranceDroppedFrame(u, "mt", "participant is 8 utterances behind"),
        UtteranceDroppedFrame(silent, "asr", "no words recognised"),
    ]
    down, _ = await run_test(InterpretationResultProcessor(), frames_to_send=frames)
    finals = [f for f in down if isinstance(f, CaptionFrame) and f.final]
    assert [(f.text, f.translations) for f in finals] == [("Hello.", {})]
    results = [f.result for f in down if isinstance(f, InterpretationResultFrame)]
    assert [(r.user_id, r.dropped) for r in results] == [
        ("alice", ("mt", "participant is 8 utterances behind")),
        ("bob", ("asr", "no words recognised")),
    ]


@pytest.mark.parametrize("before", [True, False])
async def test_interpretations_may_finish_before_the_translations_are_all_known(before):
    u = utterance()
    done = [InterpretationDoneFrame(u, "es")]
    known = [TranslationsDoneFrame(u, {"es": "Hola."})]
    frames = [transcript(u, "Hi."), *(done + known if before else known + done)]
    down, _ = await run_test(InterpretationResultProcessor(), frames_to_send=frames)
    assert [f.result.spoken for f in down if isinstance(f, InterpretationResultFrame)] == [("es",)]
