"""Who is speaking and whose words are being interpreted: small events for the room's pages.

The page shows, next to each participant, that they are speaking and that an
interpretation of them is playing. :class:`ParticipantActivity` turns what the room
transport already sees into those events, only when something changes:

* ``{"type": "activity", "participant_id", "speaking": bool}`` from the level of each
  participant's incoming audio (a gate with hysteresis: on after ``start_ms`` above
  ``threshold_dbfs``, off ``release_ms`` after the last loud frame). Not from partial
  captions: they lag behind the voice when the recogniser is busy, and a muted
  microphone must show as silent at once;
* ``{"type": "activity", "participant_id", "interpreting": bool}`` while an
  interpretation of that participant plays to at least one listener.

It costs one RMS per incoming 20 ms frame and a message per change; nothing runs in the
pipeline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ParticipantActivity"]


@dataclass
class _Speaker:
    speaking: bool = False
    loud_since: float | None = None
    last_loud: float = -math.inf


class ParticipantActivity:
    """Speaking and interpreting state of a room's participants.

    Args:
        send: Sends one JSON-ready message to everyone in the room.
        threshold_dbfs: Frames louder than this count as speech.
        start_ms: Speech this long (continuously above the threshold) starts "speaking".
        release_ms: "speaking" ends this long after the last loud frame.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        *,
        threshold_dbfs: float = -45.0,
        start_ms: float = 60.0,
        release_ms: float = 700.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._start_s = start_ms / 1000
        self._release_s = release_ms / 1000
        self._clock = clock
        self._speakers: dict[str, _Speaker] = {}
        #: (listener, interpretation key) → the speaker being interpreted, while it plays.
        self._playing: dict[tuple[str, Any], str] = {}

    # -- speaking -----------------------------------------------------------------

    def audio(self, participant_id: str, pcm: bytes | np.ndarray) -> None:
        """A frame of what ``participant_id`` sends (int16 mono, any rate)."""
        samples = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray) else pcm
        if not len(samples):
            return
        now = self._clock()
        speaker = self._speakers.setdefault(participant_id, _Speaker())
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if rms >= self._threshold:
            if speaker.loud_since is None:
                speaker.loud_since = now
            speaker.last_loud = now
            if not speaker.speaking and now - speaker.loud_since >= self._start_s:
                self._speaking(participant_id, speaker, True)
        else:
            speaker.loud_since = None
            if speaker.speaking and now - speaker.last_loud >= self._release_s:
                self._speaking(participant_id, speaker, False)

    def _speaking(self, participant_id: str, speaker: _Speaker, on: bool) -> None:
        speaker.speaking = on
        self._send({"type": "activity", "participant_id": participant_id, "speaking": on})

    # -- interpreting -------------------------------------------------------------

    def interpretation_started(self, listener_id: str, key: Any, speaker_id: str) -> None:
        """``listener_id`` started hearing interpretation ``key`` of ``speaker_id``."""
        first = not self.interpreting(speaker_id)
        self._playing[(listener_id, key)] = speaker_id
        if first:
            self._send({"type": "activity", "participant_id": speaker_id, "interpreting": True})

    def interpretation_ended(self, listener_id: str, key: Any) -> None:
        """``listener_id`` heard the end of interpretation ``key`` (or it was cut)."""
        speaker_id = self._playing.pop((listener_id, key), None)
        if speaker_id is not None and not self.interpreting(speaker_id):
            self._send({"type": "activity", "participant_id": speaker_id, "interpreting": False})

    def interpreting(self, speaker_id: str) -> bool:
        """Whether an interpretation of ``speaker_id`` plays to anyone now."""
        return speaker_id in self._playing.values()

    # -- participants -------------------------------------------------------------

    def forget(self, participant_id: str) -> None:
        """``participant_id`` left: drop their state (what they were hearing ends too)."""
        self._speakers.pop(participant_id, None)
        for listener, key in [k for k in self._playing if k[0] == participant_id]:
            self.interpretation_ended(listener, key)

    def snapshot(self) -> list[dict[str, Any]]:
        """The events that bring a newly joined page up to date."""
        out: list[dict[str, Any]] = [
            {"type": "activity", "participant_id": pid, "speaking": True}
            for pid, speaker in self._speakers.items()
            if speaker.speaking
        ]
        for speaker_id in dict.fromkeys(self._playing.values()):
            out.append({"type": "activity", "participant_id": speaker_id, "interpreting": True})
        return out
