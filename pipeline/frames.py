"""polyvox's own frames and the per-utterance record they carry.

pipecat's frames are reused where they fit (``UserAudioRawFrame`` in,
``TranscriptionFrame``, ``TranslationFrame``, ``TTSAudioRawFrame``); the subclasses
here add the :class:`Utterance` so that every stage can stamp its timing on the
same record and the output side knows which utterance a chunk belongs to.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    DataFrame,
    SystemFrame,
    TranscriptionFrame,
    TranslationFrame,
    TTSAudioRawFrame,
)

__all__ = [
    "ARRIVED_AT",
    "STAGE_MARKS",
    "CaptionFrame",
    "ImageFrame",
    "InterpretationAudioFrame",
    "InterpretationDoneFrame",
    "InterpretationResult",
    "InterpretationResultFrame",
    "NoticeFrame",
    "SoundCandidateFrame",
    "TranslationsDoneFrame",
    "Utterance",
    "UtteranceAudioFrame",
    "UtteranceDroppedFrame",
    "UtteranceTranscriptionFrame",
    "UtteranceTranslationFrame",
    "VOICE_CHANGED",
    "VoiceChangedAudioFrame",
    "VoiceConsentFrame",
    "SpeechActivityFrame",
    "SpeculationAbortedFrame",
    "UtteranceCommittedFrame",
]

_ids = itertools.count(1)

#: ``frame.metadata`` key a transport may set on ``UserAudioRawFrame``: when its audio
#: arrived (``time.monotonic()``), when the frame reaches the pipeline later than that
#: (it was received on another thread).
ARRIVED_AT = "arrived_at"

#: The wall-clock marks an utterance collects, in pipeline order. ``released`` is when a
#: speculative interpretation was confirmed (its audio could be heard from then on).
STAGE_MARKS = ("speech_end", "asr_done", "mt_done", "first_tts_audio", "released", "tts_done", "first_audio_out")

#: The ``target_language`` of voice-changed audio: it is for every listener, whatever
#: language they hear.
VOICE_CHANGED = "voice"


@dataclass
class Utterance:
    """One stretch of one participant's speech, from speech start to hang-over silence.

    Attributes:
        user_id: The participant who spoke.
        language: ISO 639-1 code of the spoken language.
        start: Start of speech in the participant's audio, seconds from their first sample.
        end: End of speech (before the hang-over silence), same clock.
        id: Process-unique, increasing in order of creation.
        split: True when the utterance was cut at the maximum length, or committed while
            its speaker went on talking (simultaneous mode), not at a pause.
        marks: Wall-clock times (``time.monotonic()``) each stage finished, by name:
            see ``STAGE_MARKS``.
        compute: Seconds of engine compute per stage (``asr``, ``mt``, ``tts``), so the
            pipeline's own overhead can be told apart from model time.

    ``kind`` says what the stretch is: ``speech`` (interpreted through text),
    ``nonverbal`` (a laugh, a sob: carried through as sound, see ``pipeline.nonverbal``)
    or ``voice`` (a stretch of voice-changer mode: converted audio, no text).

    A *speculative* utterance (``speculative=True``) is an attempt, number ``attempt``,
    at finishing the utterance ``id`` at a pause: its interpretation is prepared while
    the hang-over runs, held back, and released (``UtteranceCommittedFrame``) or thrown
    away (``SpeculationAbortedFrame``, the speaker went on). Readers see only released
    attempts, under the utterance's ``id``.

    The record carries identity and timing only: what was said and its translations
    travel in frames (``UtteranceTranscriptionFrame``, ``CaptionFrame``,
    ``InterpretationResultFrame``), never written into a record other stages read.
    """

    user_id: str
    language: str
    start: float
    end: float
    id: int = field(default_factory=lambda: next(_ids))
    split: bool = False
    speculative: bool = False
    attempt: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    kind: str = "speech"

    @property
    def duration(self) -> float:
        """Seconds of speech."""
        return self.end - self.start

    def mark(self, name: str, when: float | None = None) -> None:
        """Record that stage ``name`` finished now (the first time only)."""
        self.marks.setdefault(name, time.monotonic() if when is None else when)

    def add_compute(self, stage: str, seconds: float) -> None:
        """Add engine compute time to ``stage``."""
        self.compute[stage] = self.compute.get(stage, 0.0) + seconds

    def latencies(self) -> dict[str, float]:
        """Per-stage latency in seconds, each from the previous mark that exists.

        Keys: ``asr`` (speech end → transcript), ``mt`` (→ translations), ``tts_first``
        (→ first synthesized audio), ``end_to_first_audio`` (speech end → first audio
        that may be heard: synthesized, and released if it was speculative; the figure a
        listener feels), ``first_audio_out`` (speech end → first audio a transport sent),
        ``ear_voice_span`` (the first word spoken → its interpretation audible, where the
        recogniser gave word timings). Speech end is the end of the last voiced audio,
        not when the hang-over passed.
        """
        m = dict(self.marks)
        if "first_tts_audio" in m and "released" in m:
            m["audible"] = max(m["first_tts_audio"], m["released"])
        elif "first_tts_audio" in m and not self.speculative:
            m["audible"] = m["first_tts_audio"]
        out: dict[str, float] = {}
        pairs = (
            ("asr", "speech_end", "asr_done"),
            ("mt", "asr_done", "mt_done"),
            ("tts_first", "mt_done", "first_tts_audio"),
            ("end_to_first_audio", "speech_end", "audible"),
            ("first_audio_out", "speech_end", "first_audio_out"),
            ("ear_voice_span", "speech_start", "audible"),
        )
        for name, a, b in pairs:
            if a in m and b in m:
                out[name] = m[b] - m[a]
        return out

    def attempt_at(self, end: float) -> Utterance:
        """A speculative attempt at finishing this utterance with speech ending at ``end``."""
        self.attempt += 1
        return Utterance(
            user_id=self.user_id,
            language=self.language,
            start=self.start,
            end=end,
            id=self.id,
            split=self.split,
            speculative=True,
            attempt=self.attempt,
        )



@dataclass
class UtteranceAudioFrame(DataFrame):
    """The speech of one utterance, 16 kHz mono int16, cut by the VAD stage.

    ``interpreted`` is false when a streaming recogniser interprets this speech under
    utterances of its own (committed segments): the frame then serves voice capture only,
    and nobody should wait for an interpretation of this utterance.
    """

    utterance: Utterance
    audio: bytes
    sample_rate: int
    interpreted: bool = True

    @property
    def user_id(self) -> str:
        return self.utterance.user_id

    @property
    def language(self) -> str:
        return self.utterance.language


@dataclass
class UtteranceTranscriptionFrame(TranscriptionFrame):
    """A final transcript, with the utterance it belongs to."""

    utterance: Utterance | None = None


@dataclass
class UtteranceTranslationFrame(TranslationFrame):
    """One translation of an utterance's transcript into one listener language."""

    utterance: Utterance | None = None
    source_text: str = ""
    target_language: str = ""


@dataclass
class InterpretationAudioFrame(TTSAudioRawFrame):
    """A chunk of synthesized interpretation of one utterance into one language."""

    utterance: Utterance | None = None
    target_language: str = ""


@dataclass
class InterpretationDoneFrame(DataFrame):
    """All audio of one utterance's interpretation into ``target_language`` has been sent.

    ``error`` says why it ended early (synthesis failed for this language); other
    languages of the utterance are not affected.
    """

    utterance: Utterance
    target_language: str
    error: str | None = None


@dataclass
class UtteranceDroppedFrame(DataFrame):
    """A stage gave up on an utterance (bad audio, engine error); later stages skip it.

    Sent downstream so ordered consumers (captions, the Discord queue) do not wait for
    an utterance that will never arrive.
    """

    utterance: Utterance
    stage: str
    reason: str


@dataclass
class CaptionFrame(DataFrame):
    """What one participant said, for people to read: a partial or final caption.

    The ASR stage sends ``final=False`` captions with the transcript alone (as soon as it
    exists, and growing while someone speaks when the engine streams); the MT stage sends
    the ``final=True`` caption with every translation once they are all done. Transports
    render these as they come (data channel, chat message, captions file).

    Attributes:
        utterance: The utterance this caption belongs to (its id, speaker and timing).
        text: The transcript (so far, when not final).
        translations: Translations by target language (final captions).
        final: Whether this is the utterance's last caption.
    """

    utterance: Utterance
    text: str
    translations: dict[str, str] = field(default_factory=dict)
    final: bool = False

    @property
    def user_id(self) -> str:
        return self.utterance.user_id

    @property
    def language(self) -> str:
        return self.utterance.language


@dataclass
class TranslationsDoneFrame(DataFrame):
    """The MT stage is done with an utterance: ``translations`` is every language it produced.

    Tells ordered consumers (the Discord playback queue) which interpretations will come,
    so a language the room stopped wanting in between never holds a place.
    """

    utterance: Utterance
    translations: dict[str, str]


@dataclass
class InterpretationResult:
    """Everything one utterance became, once no stage will add to it.

    Attributes:
        utterance: Identity and timing.
        transcript: What was recognised ("" when nothing was).
        translations: By target language.
        spoken: Languages whose interpretation audio was completely produced.
        dropped: ``(stage, reason)`` when a stage gave up on the utterance.
    """

    utterance: Utterance
    transcript: str = ""
    translations: dict[str, str] = field(default_factory=dict)
    spoken: tuple[str, ...] = ()
    dropped: tuple[str, str] | None = None

    @property
    def id(self) -> int:
        return self.utterance.id

    @property
    def user_id(self) -> str:
        return self.utterance.user_id

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (captions files, logs, metrics)."""
        u = self.utterance
        return {
            "id": u.id,
            "user_id": u.user_id,
            "language": u.language,
            "start": round(u.start, 3),
            "end": round(u.end, 3),
            "split": u.split,
            "transcript": self.transcript,
            "translations": dict(self.translations),
            "latency": {k: round(v, 4) for k, v in u.latencies().items()},
            "compute": {k: round(v, 4) for k, v in u.compute.items()},
        }


@dataclass
class InterpretationResultFrame(DataFrame):
    """One utterance is finished: every interpretation played out, or the utterance dropped."""

    result: InterpretationResult

    @property
    def utterance(self) -> Utterance:
        return self.result.utterance

    @property
    def user_id(self) -> str:
        return self.result.utterance.user_id


@dataclass
class VoiceConsentFrame(SystemFrame):
    """A participant allowed or refused voice cloning (or asked to be forgotten).

    A system frame, so it overtakes queued audio: whatever captures voices discards the
    participant's capture at once when ``allowed`` is false or ``forget`` is set.
    """

    user_id: str
    allowed: bool
    forget: bool = False


@dataclass
class SpeechActivityFrame(DataFrame):
    """One step of a participant's speech, for recognisers that stream (see
    ``pipeline.segmenter.SpeechEvent``): ``start``, ``audio``, ``pause``, ``resume``,
    ``end``, ``split``.

    Attributes:
        user_id: The participant.
        kind: The event.
        at: Stream seconds the event refers to (speech start, speech end at a pause...).
        position: Stream seconds of all of the participant's audio scored so far.
        wall: ``time.monotonic()`` when the audio up to ``position`` had arrived, so a
            stream time maps to the moment it was spoken: ``wall - (position - t)``.
        audio: 16 kHz mono int16 samples (``start`` and ``audio`` events).
        utterance: For ``end``/``split``: the utterance the segmenter cut (the same one
            its ``UtteranceAudioFrame`` carries).
        whole: This stretch of speech is recognised whole from its
            ``UtteranceAudioFrame`` (``interpreted``), not streamed: its language is still
            being identified.
    """

    user_id: str
    kind: str
    at: float
    position: float
    wall: float
    audio: bytes = b""
    utterance: Utterance | None = None
    whole: bool = False

    def spoken_at(self, t: float) -> float:
        """The wall-clock moment stream time ``t`` was spoken."""
        return self.wall - (self.position - t)


@dataclass
class SpeculationAbortedFrame(SystemFrame):
    """The speaker went on: a speculative attempt is void; everything it produced is dropped."""

    utterance: Utterance

    @property
    def user_id(self) -> str:
        return self.utterance.user_id


@dataclass
class UtteranceCommittedFrame(SystemFrame):
    """The hang-over confirmed a speculative attempt: its interpretation may be heard."""

    utterance: Utterance

    @property
    def user_id(self) -> str:
        return self.utterance.user_id


@dataclass
class SoundCandidateFrame(DataFrame):
    """A loud stretch of a participant's audio that the VAD did not call speech: maybe a
    laugh, a sob or a sigh (``pipeline.nonverbal.EnergyGate``), for the classifier.

    Attributes:
        user_id: The participant.
        start: Start on their stream clock (seconds, as utterances).
        end: End, same clock.
        audio: 16 kHz mono int16.
    """

    user_id: str
    start: float
    end: float
    audio: bytes


@dataclass
class VoiceChangedAudioFrame(InterpretationAudioFrame):
    """A chunk of a voice-changer participant's speech in their chosen voice.

    ``utterance`` is the stretch of speech it belongs to (``kind="voice"``) and
    ``target_language`` is :data:`VOICE_CHANGED`: every other participant hears it, live,
    instead of the original. ``offset`` is where the chunk starts in the participant's
    audio (seconds on their stream clock), so the timing is kept.
    """

    offset: float = 0.0


@dataclass
class ImageFrame(DataFrame):
    """A picture made from what a participant asked for (speech-to-image).

    Attributes:
        user_id: Who asked.
        caption: Their words, as they said them (the transcript).
        prompt: What the image model was given (translated into its language).
        png: The picture.
        language: The language they spoke.
    """

    user_id: str
    caption: str
    prompt: str
    png: bytes
    language: str = ""


@dataclass
class NoticeFrame(DataFrame):
    """Something one participant should be told (an image request refused, ...).

    Attributes:
        user_id: Who to tell.
        kind: What it is about (``image``, ``voice``...).
        text: One line for people.
    """

    user_id: str
    kind: str
    text: str
