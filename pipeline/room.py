"""Who is in a room, what each participant speaks and which languages listeners want.

Shared by the processors of one room; transports and chat commands change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loguru import logger

__all__ = ["Participant", "Room"]


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
        language_detected: ``language`` was identified from their speech rather than set
            (by them, a transport or the configuration); a set language is never
            re-identified.
    """

    user_id: str
    language: str
    name: str = ""
    hears: str | None = None
    voice: Any | None = None
    voice_opt_out: bool = False
    identity: str | None = None
    language_detected: bool = False


class Room:
    """The participants of one conversation and the languages it is interpreted into.

    Args:
        listener_languages: Languages every utterance is interpreted into (each minus the
            speaker's own).
        default_language: Spoken language assumed for a participant who has not set one
            (``"auto"``: identified from their speech).
    """

    def __init__(self, listener_languages: list[str] | tuple[str, ...], default_language: str = "en"):
        self.listener_languages: list[str] = list(dict.fromkeys(listener_languages))
        self.default_language = default_language
        self.participants: dict[str, Participant] = {}

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
        if self.participants.pop(user_id, None) is not None:
            logger.info(f"participant {user_id} left")

    def participant(self, user_id: str) -> Participant:
        """The participant with this id, joining them with defaults if new."""
        return self.participants.get(user_id) or self.join(user_id)

    def language_of(self, user_id: str) -> str:
        """The language ``user_id`` speaks."""
        return self.participant(user_id).language

    def targets_for(self, user_id: str) -> list[str]:
        """Languages an utterance of ``user_id`` must be interpreted into."""
        spoken = self.language_of(user_id)
        wanted = list(self.listener_languages)
        for other in self.participants.values():
            if other.hears and other.hears not in wanted:
                wanted.append(other.hears)
        return [lang for lang in wanted if lang != spoken]

    def voice_for(self, user_id: str) -> Any | None:
        """The voice profile to speak ``user_id``'s interpretation in, if any."""
        participant = self.participants.get(user_id)
        if participant is None or participant.voice_opt_out:
            return None
        return participant.voice
