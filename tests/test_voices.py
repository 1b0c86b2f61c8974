"""Voice profiles: enrollment checks, the SQLite + tensor store, automatic capture.

Speech is real (librivox, 16 kHz) and measured with the real silero VAD. The voice
model here is a small deterministic cloner implementing the same ``VoiceCloner``
interface as ``XTTSEngine``, so these tests run without torch; test_tts_xtts.py enrolls
with the real XTTS loader.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from pipecat.tests.utils import SleepFrame, run_test

from pipeline.audio import write_wav
from pipeline.engines.vad.silero import SileroVADEngine
from pipeline.errors import AudioInputError, ConfigError
from pipeline.frames import Utterance, UtteranceAudioFrame, VoiceConsentFrame
from pipeline.room import Room
from tests.conftest import concat_with_silence
from tests.fakes import SpectrumCloner
from voices.capture import VoiceCapture, VoiceCaptureParams
from voices.capture_processor import VoiceCaptureProcessor
from voices.cli import forget_voice, list_voices
from voices.consent import VoiceConsent
from voices.enrollment import EnrollmentLimits, VoiceEnrollmentError
from voices.profile import VoiceProfile
from voices.store import VoiceStore


class NotACloner:
    name = "espeak"
    clones_voices = False


@pytest.fixture(scope="module")
def vad() -> SileroVADEngine:
    engine = SileroVADEngine()
    engine.load()
    return engine


@pytest.fixture
def store(tmp_path, vad) -> VoiceStore:
    return VoiceStore(tmp_path / "voices", vad=vad)


@pytest.fixture(scope="module")
def speech(librivox) -> np.ndarray:
    """~25 s of one reader with pauses between sentences."""
    return concat_with_silence([clip.pcm for clip in librivox], gap_s=0.8)


def stored_files(store: VoiceStore) -> list[Path]:
    return sorted(p for p in (store.data_dir / "tensors").iterdir())


def assert_nothing_stored(store: VoiceStore) -> None:
    assert store.list() == []
    assert stored_files(store) == []


# -- enrollment ------------------------------------------------------------------------


def test_enrolling_a_recording_stores_a_profile_that_survives_a_restart(store, speech, vad, tmp_path):
    cloner = SpectrumCloner()
    path = tmp_path / "alice.wav"
    write_wav(path, speech, 16000)

    profile = store.enroll_file("alice", path, cloner)

    assert profile.user_id == "alice" and profile.source == "enrolled" and profile.version == 1
    # Pauses are not speech: the profile counts less than the recording's 28 s.
    assert 15.0 < profile.seconds < len(speech) / 16000 - 3.0
    assert len(cloner.calls) == 1
    assert len(stored_files(store)) == 1

    reopened = VoiceStore(store.data_dir, vad=vad).get("alice")
    assert reopened is not None
    assert reopened.key == profile.key and reopened.source == "enrolled"
    assert reopened.seconds == pytest.approx(profile.seconds)
    assert np.array_equal(reopened.gpt_cond_latent, profile.gpt_cond_latent)
    assert np.array_equal(reopened.speaker_embedding, profile.speaker_embedding)


@pytest.mark.parametrize("suffix, codec", [(".mp3", ["-c:a", "libmp3lame"]), (".ogg", ["-c:a", "libvorbis"]), (".m4a", ["-c:a", "aac"])])
def test_compressed_recordings_enroll_too(store, librivox, tmp_path, suffix, codec):
    source = tmp_path / "in.wav"
    write_wav(source, concat_with_silence([librivox[0].pcm, librivox[2].pcm]), 16000)
    target = tmp_path / f"bob{suffix}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), *codec, str(target)], check=True
    )

    profile = store.enroll_file("bob", target, SpectrumCloner())

    assert profile.seconds > 8.0
    assert [v.user_id for v in store.list()] == ["bob"]


def test_silence_is_refused_and_nothing_is_stored(store, tmp_path):
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(16000 * 8, dtype=np.int16), 16000)
    cloner = SpectrumCloner()

    with pytest.raises(VoiceEnrollmentError, match="silence"):
        store.enroll_file("alice", path, cloner)

    assert cloner.calls == []
    assert_nothing_stored(store)


def test_noise_without_speech_is_refused(store, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.wav"
    write_wav(path, (rng.standard_normal(16000 * 6) * 2000).astype(np.int16), 16000)

    with pytest.raises(VoiceEnrollmentError, match="no speech found"):
        store.enroll_file("alice", path, SpectrumCloner())

    assert_nothing_stored(store)


def test_under_three_seconds_of_speech_is_refused(store, librivox, tmp_path):
    short = librivox[1]  # "he was not an ill disposed young man": 3.0 s with its pauses
    path = tmp_path / "short.wav"
    write_wav(path, short.pcm, 16000)

    with pytest.raises(VoiceEnrollmentError, match=r"only \d\.\d s of speech; enrollment needs at least 3 s"):
        store.enroll_file("alice", path, SpectrumCloner())

    assert_nothing_stored(store)


def test_over_sixty_seconds_of_speech_is_refused(store, speech, tmp_path):
    path = tmp_path / "long.wav"
    write_wav(path, np.concatenate([speech] * 4), 16000)  # ~110 s, ~80 s of it speech

    with pytest.raises(VoiceEnrollmentError, match=r"s of speech is too long; enrollment takes at most 60 s"):
        store.enroll_file("alice", path, SpectrumCloner())

    assert_nothing_stored(store)


def test_a_file_that_is_not_audio_is_refused(store, tmp_path):
    path = tmp_path / "voice.wav"
    path.write_text("this is a text file, not a recording\n" * 20)

    with pytest.raises(AudioInputError, match="not a readable audio file"):
        store.enroll_file("alice", path, SpectrumCloner())

    assert_nothing_stored(store)


def test_a_file_over_the_size_cap_is_refused(tmp_path, vad, librivox):
    store = VoiceStore(tmp_path / "voices", vad=vad, limits=EnrollmentLimits(max_file_bytes=100_000))
    path = librivox[0].path  # 227 kB

    with pytest.raises(AudioInputError, match="file is too large"):
        store.enroll_file("alice", path, SpectrumCloner())

    assert_nothing_stored(store)


class RecordingLoader:
    """Loads a SpectrumCloner and records when, as the slow XTTS loader would be called."""

    def __init__(self) -> None:
        self.loads = 0
        self.cloner = SpectrumCloner()

    def __call__(self) -> SpectrumCloner:
        self.loads += 1
        return self.cloner


def _bomb(path: Path) -> Path:
    # 10 s × 8 channels × 384 kHz of silence: 31 million samples in ~12 KB.
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "anullsrc=r=384000:cl=7.1",
         "-t", "10", "-c:a", "flac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_a_bad_file_is_refused_before_the_voice_model_is_loaded(tmp_path, vad, librivox, speech):
    # Enrollment limits of 60 s of audio cap decoding at 60 × 8 × 48,000 samples.
    limits = EnrollmentLimits(max_audio_s=60.0, max_file_bytes=2_000_000)
    store = VoiceStore(tmp_path / "voices", vad=vad, limits=limits)
    text = tmp_path / "notes.mp3"
    text.write_text("meeting notes\n" * 50)
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(16000 * 5, dtype=np.int16), 16000)
    short = tmp_path / "short.wav"
    write_wav(short, librivox[1].pcm, 16000)
    big = tmp_path / "big.wav"
    write_wav(big, np.concatenate([speech] * 3), 16000)  # 2.6 MB
    cases = [
        (tmp_path / "missing.wav", "file not found"),
        (text, "not a readable audio file"),
        (silence, "is silence"),
        (short, "only"),
        (big, "file is too large"),
        (_bomb(tmp_path / "bomb.flac"), "too much audio data"),
    ]
    loader = RecordingLoader()
    for path, message in cases:
        with pytest.raises(AudioInputError, match=message):
            store.enroll_file("alice", path, loader)
    assert loader.loads == 0
    assert_nothing_stored(store)

    good = tmp_path / "alice.wav"
    write_wav(good, speech, 16000)
    profile = store.enroll_file("alice", good, loader)
    assert loader.loads == 1 and loader.cloner.calls and profile.version == 1


def test_the_enroll_command_checks_the_file_before_loading_the_model(tmp_path, monkeypatch, speech):
    from types import SimpleNamespace

    from voices import cli

    loads: list[str] = []

    class LoadedEngine(SpectrumCloner):
        def close(self) -> None:
            loads.append("closed")

    def load(settings):
        loads.append(settings.tts.engine)
        return LoadedEngine()

    monkeypatch.setattr(cli, "_load_cloning_engine", load)
    settings = SimpleNamespace(
        tts=SimpleNamespace(engine="xtts", model=None, device="auto", options={}),
        voices=SimpleNamespace(data_dir=str(tmp_path / "voices")),
    )
    bad = tmp_path / "silence.wav"
    write_wav(bad, np.zeros(16000 * 5, dtype=np.int16), 16000)
    args = SimpleNamespace(voices_command="enroll", user="alice", file=str(bad))
    with pytest.raises(VoiceEnrollmentError, match="is silence"):
        cli.run_voices_command(args, settings)
    assert loads == []

    good = tmp_path / "alice.wav"
    write_wav(good, speech, 16000)
    assert cli.run_voices_command(SimpleNamespace(voices_command="enroll", user="alice", file=str(good)), settings) == 0
    assert loads == ["xtts", "closed"]

    # An engine that cannot clone is a configuration error before the file is even read.
    espeak = SimpleNamespace(tts=SimpleNamespace(engine="espeak"), voices=settings.voices)
    with pytest.raises(ConfigError, match="cannot clone"):
        cli.run_voices_command(SimpleNamespace(voices_command="enroll", user="bob", file="/nonexistent"), espeak)
    assert loads == ["xtts", "closed"]


def test_an_engine_that_cannot_clone_is_refused(store, speech):
    with pytest.raises(ConfigError, match="cannot clone voices"):
        store.enroll("alice", speech, NotACloner())  # type: ignore[arg-type]

    assert_nothing_stored(store)


def test_enrolling_again_replaces_the_profile_under_a_new_version(store, speech, librivox):
    cloner = SpectrumCloner()
    first = store.enroll("alice", speech, cloner)
    second = store.enroll("alice", concat_with_silence([librivox[0].pcm, librivox[3].pcm]), cloner)

    assert second.id == first.id and second.version == 2
    assert not np.array_equal(second.gpt_cond_latent, first.gpt_cond_latent)
    assert [p.name for p in stored_files(store)] == [f"{first.id}.v2.npz"]
    assert store.get("alice").key == (first.id, 2)


# -- forget and opt-out ---------------------------------------------------------------


def test_forget_deletes_the_rows_and_the_files(store, speech):
    store.enroll("alice", speech, SpectrumCloner())
    store.enroll("bob", speech, SpectrumCloner())
    assert len(stored_files(store)) == 2

    assert store.forget("alice") is True

    assert store.get("alice") is None
    assert [v.user_id for v in store.list()] == ["bob"]
    assert len(stored_files(store)) == 1
    assert store.forget("alice") is False
    assert "nothing to delete" in forget_voice(store, "alice")


def test_opt_out_is_kept_through_forget_and_cleared_by_enrolling(store, speech):
    store.enroll("alice", speech, SpectrumCloner())
    store.opt_out("alice")
    store.forget("alice")

    assert store.is_opted_out("alice")
    [entry] = store.list()
    assert entry.user_id == "alice" and entry.opted_out and entry.profile_id is None

    store.enroll("alice", speech, SpectrumCloner())
    assert not store.is_opted_out("alice")
    store.opt_out("alice", False)
    store.forget("alice")
    assert_nothing_stored(store)


def test_list_voices_shows_profiles_and_opt_outs(store, speech):
    store.enroll("alice", speech, SpectrumCloner())
    store.opt_out("carol")

    table = list_voices(store).splitlines()

    assert table[0].split() == ["user", "profile", "version", "speech", "enrolled", "voice-changer", "target", "cloning"]
    assert table[1].startswith("alice") and table[1].endswith("on")
    assert table[2].startswith("carol") and table[2].endswith("opted out")


def test_store_files_are_private(store, speech):
    store.enroll("alice", speech, SpectrumCloner())

    assert store.data_dir.stat().st_mode & 0o077 == 0
    assert all(path.stat().st_mode & 0o077 == 0 for path in stored_files(store))


# -- automatic capture -----------------------------------------------------------------


def test_capture_makes_a_profile_after_six_seconds_and_refines_it(vad, librivox):
    cloner = SpectrumCloner()
    capture = VoiceCapture("alice", vad)
    versions: list[VoiceProfile] = []

    for clip in librivox:
        before = capture.speech_seconds
        due = capture.add(clip.pcm, 16000)
        assert capture.speech_seconds > before  # every librivox sentence is clean speech
        if due:
            versions.append(capture.build(cloner))

    assert len(versions) >= 3
    first = versions[0]
    assert first.version == 1 and first.source == "auto"
    assert 6.0 <= first.seconds < 12.0
    assert [p.version for p in versions] == list(range(1, len(versions) + 1))
    assert all(p.id == first.id for p in versions)
    assert all(b.seconds >= a.seconds * 1.5 for a, b in zip(versions, versions[1:], strict=False))
    # One model call per version: nothing is recomputed while no new version is due.
    assert len(cloner.calls) == len(versions)
    assert capture.build(cloner) is None and len(cloner.calls) == len(versions)


def test_capture_stops_at_its_cap_and_releases_the_audio(vad, speech):
    cloner = SpectrumCloner()
    params = VoiceCaptureParams(first_profile_s=6.0, max_speech_s=12.0)
    capture = VoiceCapture("alice", vad, params)

    for part in np.array_split(speech, 4):
        if capture.add(part, 16000):
            capture.build(cloner)

    assert capture.done
    assert capture.profile.seconds == pytest.approx(12.0)
    assert cloner.calls[-1] <= 12.0 + 1.0  # the model saw at most the cap (plus context)
    assert capture.add(speech, 16000) is False
    assert capture._chunks == []


def test_capture_skips_quiet_clipped_and_tiny_utterances(vad, librivox):
    capture = VoiceCapture("alice", vad)
    loud = librivox[0].pcm.astype(np.int32) * 40

    capture.add((librivox[0].pcm // 200).astype(np.int16), 16000)  # whisper far away
    capture.add(np.clip(loud, -32768, 32767).astype(np.int16), 16000)  # clipped
    capture.add(librivox[1].pcm[:8000], 16000)  # half a second: a cough, a "yes"

    assert capture.speech_seconds == 0.0


def utterance_frame(user: str, pcm: np.ndarray) -> UtteranceAudioFrame:
    utterance = Utterance(user_id=user, language="en", start=0.0, end=len(pcm) / 16000)
    return UtteranceAudioFrame(utterance, pcm.tobytes(), 16000)


async def test_processor_sets_the_participants_voice_and_forwards_every_frame(vad, librivox):
    room = Room(["es"])
    room.join("alice")
    cloner = SpectrumCloner()
    processor = VoiceCaptureProcessor(cloner, vad, room)
    frames = [utterance_frame("alice", clip.pcm) for clip in librivox[:3]]

    down, _ = await run_test(
        processor, frames_to_send=frames, expected_down_frames=[UtteranceAudioFrame] * 3
    )

    voice = room.participants["alice"].voice
    assert isinstance(voice, VoiceProfile) and voice.source == "auto"
    assert voice.seconds >= 6.0 and voice.version == len(cloner.calls)
    assert [f.utterance.id for f in down] == [f.utterance.id for f in frames]


async def test_processor_uses_the_enrolled_voice_without_capturing(vad, librivox, store, speech):
    enrolled = store.enroll("alice", speech, SpectrumCloner())
    room = Room(["es"])
    room.join("p1", identity="alice")  # alice, joined under a session id of the transport's
    cloner = SpectrumCloner()
    processor = VoiceCaptureProcessor(cloner, vad, room, consent=VoiceConsent(store, engine=cloner))

    await run_test(processor, frames_to_send=[utterance_frame("p1", c.pcm) for c in librivox])

    assert room.participants["p1"].voice.key == enrolled.key
    assert cloner.calls == []


async def test_processor_respects_opt_outs(vad, librivox, store, speech):
    store.enroll("bob", speech, SpectrumCloner())
    store.opt_out("bob")
    room = Room(["es"])
    room.join("bob", identity="bob")
    room.join("carol")
    room.participants["carol"].voice_opt_out = True  # the participant's own flag (the page's switch)
    cloner = SpectrumCloner()
    processor = VoiceCaptureProcessor(cloner, vad, room, consent=VoiceConsent(store, engine=cloner))
    frames = [utterance_frame(user, c.pcm) for c in librivox for user in ("bob", "carol")]

    await run_test(processor, frames_to_send=frames)

    assert room.participants["bob"].voice is None
    assert room.participants["carol"].voice is None
    assert cloner.calls == []
    assert processor.capture_of("bob") is None and processor.capture_of("carol") is None


async def test_processor_drops_a_voice_when_the_user_opts_out_mid_session(vad, librivox, store):
    room = Room(["es"])
    room.join("alice", identity="alice")
    cloner = SpectrumCloner()
    processor = VoiceCaptureProcessor(cloner, vad, room, consent=VoiceConsent(store, engine=cloner))
    store.opt_out("alice", False)
    frames = [utterance_frame("alice", c.pcm) for c in librivox[:3]]

    await run_test(processor, frames_to_send=frames)
    assert room.participants["alice"].voice is not None

    store.opt_out("alice")
    await run_test(processor, frames_to_send=[utterance_frame("alice", librivox[3].pcm)])

    assert room.participants["alice"].voice is None
    assert processor.capture_of("alice") is None


def test_enrollment_limits_must_make_sense():
    with pytest.raises(ValueError):
        EnrollmentLimits(min_speech_s=10, max_speech_s=5)


async def test_a_refusal_discards_a_capture_even_while_its_voice_is_being_computed(vad, librivox):
    room = Room(["es"])
    room.join("alice")
    computing = threading.Event()
    release = threading.Event()

    class SlowCloner(SpectrumCloner):
        def condition(self, pcm, sample_rate):
            computing.set()
            release.wait(10)
            return super().condition(pcm, sample_rate)

    processor = VoiceCaptureProcessor(SlowCloner(), vad, room)
    frames: list = [utterance_frame("alice", c.pcm) for c in librivox[:3]]

    async def refuse_mid_build() -> None:
        await asyncio.to_thread(computing.wait, 10)
        room.participants["alice"].voice_opt_out = True
        await processor.queue_frame(VoiceConsentFrame("alice", allowed=False))
        await asyncio.sleep(0.1)
        release.set()

    refusal = asyncio.create_task(refuse_mid_build())
    await run_test(processor, frames_to_send=[*frames, SleepFrame(1.0)])
    await refusal
    assert room.participants["alice"].voice is None  # the profile computed meanwhile was thrown away
    assert processor.capture_of("alice") is None


async def test_consent_enrolls_reports_and_forgets_and_tells_subscribed_sessions(store, speech, librivox):
    cloner = SpectrumCloner()
    consent = VoiceConsent(store, engine=cloner)
    told: list[tuple[str, bool, bool]] = []

    async def listener(identity: str, allowed: bool, forgotten: bool) -> None:
        told.append((identity, allowed, forgotten))

    unsubscribe = consent.subscribe(listener)
    with pytest.raises(VoiceEnrollmentError, match="only .* s of speech"):
        await consent.enroll("42", librivox[1].pcm)
    assert await consent.status("42") is None and await consent.enrolled_voice("42") is None

    profile = await consent.enroll("42", speech)
    assert profile.version == 1 and "version 1" in await consent.status("42")
    assert (await consent.enrolled_voice("42")).user_id == "42"

    await consent.set_allowed("42", False)
    assert await consent.enrolled_voice("42") is None and not await consent.allowed("42")
    await consent.set_allowed("42", True)
    assert await consent.forget("42") is True and await consent.forget("42") is False
    assert_nothing_stored(store)
    assert told == [("42", True, False), ("42", False, False), ("42", True, False), ("42", True, True), ("42", True, True)]
    unsubscribe()
    await consent.set_allowed("42", False)
    assert len(told) == 5


async def test_consent_refuses_to_enroll_with_an_engine_that_does_not_clone(store, speech):
    with pytest.raises(ConfigError, match="does not clone"):
        await VoiceConsent(store, engine=NotACloner()).enroll("42", speech)


async def test_an_enrolled_voice_set_mid_session_is_not_overwritten_by_capture(vad, librivox, speech):
    room = Room(["es"])
    room.join("alice")
    cloner = SpectrumCloner()
    enrolled = VoiceProfile("alice", SpectrumCloner().condition(speech, 16000), 20.0, "enrolled")

    class EnrollsDuringCapture(SpectrumCloner):
        def condition(self, pcm, sample_rate):
            room.participants["alice"].voice = enrolled  # `/voice enroll` finished meanwhile
            return cloner.condition(pcm, sample_rate)

    processor = VoiceCaptureProcessor(EnrollsDuringCapture(), vad, room)
    await run_test(processor, frames_to_send=[utterance_frame("alice", c.pcm) for c in librivox])

    assert room.participants["alice"].voice is enrolled
    assert len(cloner.calls) == 1  # capture stopped once the enrolled voice was there
