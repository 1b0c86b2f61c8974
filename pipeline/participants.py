"""The protocol through which a session releases one participant in every stage.

Every processor that keeps something per participant (a lane and its queue, a denoise
filter, a VAD segmenter, a resampler, a voice capture, an arrival clock) implements
:class:`ParticipantState`. When someone leaves, ``InterpretationSession.leave`` walks the
pipeline's processors in order and, through this protocol alone (no per-class checks):

1. waits until no stage is busy with them (``participant_busy``);
2. asks each stage to push out what it still buffers for them (``flush_participant``:
   the segmenter turns speech cut off by the departure into an utterance), waiting for
   that work to finish as well;
3. tells each stage to drop every trace of them (``release_participant``).

``holds_participant`` lets tests (and ``/debug`` tooling) check that nothing is left.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ParticipantState"]


@runtime_checkable
class ParticipantState(Protocol):
    """A processor (or transport half) that holds per-participant state."""

    def holds_participant(self, user_id: str) -> bool:
        """Whether anything of ``user_id`` is kept here."""
        ...

    def participant_busy(self, user_id: str) -> bool:
        """Whether work of ``user_id`` is queued here or in progress."""
        ...

    async def flush_participant(self, user_id: str) -> None:
        """Push downstream whatever is buffered for ``user_id`` (they are leaving)."""
        ...

    async def release_participant(self, user_id: str) -> None:
        """Forget ``user_id`` entirely: queues, model state, buffers."""
        ...
