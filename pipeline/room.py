"""Who is in a room, what each participant speaks and which languages listeners want.

Shared by the processors of one room; transports and chat commands change it.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from dataclasses import dataclass
from typing import Any

from loguru import logger

__all__ = ["MODES", "ArrivalClock", "Participant", "Room"]


class ArrivalClock:
    """When each stretch of one participant's audio reached the pipeline, by sample.

    The cascade counts a participant's time in samples (16 kHz) as it was delivered, so
    a position in their audio (an utterance's end) maps back to the wall-clock moment it
    was spoken, whatever queue it waited in afterwards. Thread-safe.
    """

    #: Checkpoints kept (one per delivered frame: about 40 minutes of 20 ms frames), in
    #: typed arrays: 16 bytes each, under 2 MB per participant when full.
    limit = 120_000

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._ends = array("q")
        self._times = array("d")
        self._total = 0
        self._lock = threading.Lock()

    def add(self, samples: int, when: float) -> None:
        """``samples`` more arrived at ``when`` (``time.monotonic()``)."""
        with self._lock:
            self._total += samples
            self._ends.append(self._total)
            self._times.append(when)
            if len(self._ends) > self.limit:
                del self._ends[: self.limit // 2], self._times[: self.limit // 2]

    def arrival(self, seconds: float) -> float | None:
        """When the audio ``seconds`` into this participant's stream had arrived."""
        sample = int(seconds * self.sample_rate)
        with self._lock:
            index = bisect.bisect_left(self._ends, sample)
            if not self._times:
                return None
            return self._times[min(index, len(self._times) - 1)]


@dataclass
class Participant:
    """One speaker/listener.

    Attributes:
        user_id: Transport-specific id (Discord user id, WebRTC participant id, file name).
        language: ISO 639-1 code of the language they speak; ``"auto"`` until it has been
            identified from their speech (``pipeline.processors.language_id``).
        name: Display name for captions.
        hears: The language they want to hear (WebRTC), or ``None`` for the room's.
        voice: Their voice profile for cloning, once one exists (``None``: neutral voice).
        voice_opt_out: They asked not to be cloned: a neutral voice speaks for them.
        identity: Who they are across sessions: the key their enrolled voice and consent
            are stored under (a Discord user id, the user a room token names); ``None``
            for anonymous participants, of whom nothing is stored.
        listener: They only listen: what they say is not interpreted (no microphone, or
            a language no recogniser here knows).
        language_detected: ``language`` was identified from their speech rather than set
            (by them, a transport or the configuration); a set language is never
            re-identified.
        mode: ``interpret`` or ``voice`` (voice changer: their speech is heard in
            another voice, no text in between); ``None``: the room's mode.
        changer_voice: The voice-changer voice they chose (a
            ``pipeline.voice_changer.ChangerVoice``, consent checked); ``None``: the
            engine's default neutral voice.
        imagine_until: Until this ``time.monotonic()`` their next sentence is a picture
            request (the page's "draw what I say", Discord's ``/imagine``).
    """

    user_id: str
    language: str
    name: str = ""
    hears: str | None = None
    voice: Any | None = None
    voice_opt_out: bool = False
    identity: str | None = None
    listener: bool = False
    language_detected: bool = False
    mode: str | None = None
    changer_voice: Any | None = None
    imagine_until: float = 0.0


#: What a room or participant does with speech: interpret it, or change its voice.
MODES = ("interpret", "voice")


class Room:
    """The participants of one conversation and the languages it is interpreted into.

    Args:
        listener_languages: Languages every utterance is interpreted into (each minus the
            speaker's own).
        default_language: Spoken language assumed for a participant who has not set one
            (``"auto"``: identified from their speech).

    Attributes:
        mode: ``interpret`` (speech → text → speech) or ``voice`` (the voice changer)
            for participants who chose neither.
        nonverbal: Laughter, crying and sighs are carried into the interpretation.
        image_trigger: Words that, said first, turn the rest of the sentence into a
            picture request (``None``: no spoken trigger in this room).
    """

    def __init__(self, listener_languages: list[str] | tuple[str, ...], default_language: str = "en"):
        self.listener_languages: list[str] = list(dict.fromkeys(listener_languages))
        self.default_language = default_language
        self.mode = "interpret"
        self.nonverbal = True
        self.image_trigger: str | None = None
        self.participants: dict[str, Participant] = {}
        self._clocks: dict[str, ArrivalClock] = {}

    def clock(self, user_id: str) -> ArrivalClock:
        """When ``user_id``'s audio arrived (kept from their first audio until they leave)."""
        clock = self._clocks.get(user_id)
        if clock is None:
            clock = self._clocks[user_id] = ArrivalClock()
        return clock

    def spoken_at(self, user_id: str, seconds: float) -> float | None:
        """The moment ``seconds`` into ``user_id``'s audio arrived, if known."""
        clock = self._clocks.get(user_id)
        return clock.arrival(seconds) if clock is not None else None

    def join(
        self,
        user_id: str,
        *,
        language: str | None = None,
        name: str = "",
        hears: str | None = None,
        identity: str | None = None,
    ) -> Participant:
        """Add a participant, or update the one with this id."""
        participant = self.participants.get(user_id)
        if participant is None:
            participant = Participant(
                user_id, language or self.default_language, name or user_id, hears, identity=identity
            )
            self.participants[user_id] = participant
            logger.info(f"participant {user_id} joined, speaks {participant.language}")
        else:
            if language:
                participant.language = language
                participant.language_detected = False
            if name:
                participant.name = name
            if hears:
                participant.hears = hears
            if identity:
                participant.identity = identity
        return participant

    def set_detected_language(self, user_id: str, language: str) -> None:
        """Record the language identified from ``user_id``'s speech (not an explicit setting)."""
        participant = self.participant(user_id)
        participant.language = language
        participant.language_detected = True

    def leave(self, user_id: str) -> None:
        """Forget a participant."""
        self._clocks.pop(user_id, None)
        if self.participants.pop(user_id, None) is not None:
            logger.info(f"participant {user_id} left")

    def participant(self, user_id: str) -> Participant:
        """The participant with this id, joining them with defaults if new."""
        return self.participants.get(user_id) or self.join(user_id)

    def language_of(self, user_id: str) -> str:
        """The language ``user_id`` speaks."""
        return self.participant(user_id).language

    def speakers(self) -> list[Participant]:
        """Participants whose speech is interpreted."""
        return [p for p in self.participants.values() if not p.listener]

    def targets_for(self, user_id: str) -> list[str]:
        """Languages an utterance of ``user_id`` must be interpreted into."""
        spoken = self.language_of(user_id)
        wanted = list(self.listener_languages)
        for other in self.participants.values():
            if other.hears and other.hears not in wanted:
                wanted.append(other.hears)
        return [lang for lang in wanted if lang != spoken]

    def mode_of(self, user_id: str) -> str:
        """``interpret`` or ``voice`` for ``user_id``'s speech (theirs, else the room's)."""
        participant = self.participants.get(user_id)
        if participant is not None and participant.mode is not None:
            return participant.mode
        return self.mode

    def voice_for(self, user_id: str) -> Any | None:
        """The voice profile to speak ``user_id``'s interpretation in, if any."""
        participant = self.participants.get(user_id)
        if participant is None or participant.voice_opt_out:
            return None
        return participant.voice
