"""The pipecat transport of one Discord voice channel.

Input: the voice receiver decodes each member's audio on its own thread and calls
:meth:`DiscordVoiceTransport.receive_audio` with 16 kHz mono int16; the transport
hops onto the event loop and pushes ``UserAudioRawFrame(user_id=str(discord id))``.

Output: interpretation audio goes into one ``InterpretationAudioSource`` (discord.py
plays it, 20 ms per read) keyed by ``(speech end, utterance id, language)``, so the
channel hears utterances in the order their speakers finished, whichever finished
synthesising first. Speech end is the moment the utterance's last sample reached the
bot (recorded per member as audio arrives), so a member whose lane runs behind under
load keeps their place. A slot is announced as soon as the utterance leaves the VAD (with
a streaming recogniser: as soon as it is committed), so a later, faster utterance cannot
jump the queue; it is finished when its TTS is done,
given up when the MT stage's ``TranslationsDoneFrame`` shows that language will not
come, and abandoned when a stage drops the utterance. Captions come as ``CaptionFrame``
and are handed to the ``on_caption`` event (final ones only by default).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, StartFrame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipeline.frames import (
    ARRIVED_AT,
    CaptionFrame,
    ImageFrame,
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    InterpretationResultFrame,
    NoticeFrame,
    TranslationsDoneFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.room import Room

__all__ = [
    "DiscordInputTransport",
    "DiscordOutputTransport",
    "DiscordTransportParams",
    "DiscordVoiceTransport",
    "InterpretationSink",
    "playback_key",
]


class InterpretationSink(Protocol):
    """What the output side plays into: ``transports.discord.player.InterpretationAudioSource``."""

    def enqueue(self, pcm: bytes, sample_rate: int, *, key: tuple = ()) -> None: ...
    def announce(self, key: tuple) -> None: ...
    def finish(self, key: tuple) -> None: ...
    def abandon(self, key: tuple) -> None: ...
    def clear(self) -> None: ...


class DiscordTransportParams(TransportParams):
    """Transport parameters with Discord's defaults.

    Audio arrives already decoded to the cascade's 16 kHz mono; audio leaves through
    discord.py's player, which paces it itself, so no end-of-call silence is written.
    """

    audio_in_enabled: bool = True
    audio_in_sample_rate: int | None = 16000
    audio_out_enabled: bool = True
    audio_out_sample_rate: int | None = 48000
    audio_out_end_silence_secs: int = 0


def playback_key(utterance: Utterance, language: str) -> tuple:
    """Where an utterance's interpretation into ``language`` plays in the channel's queue.

    Ordered by when the utterance's speech ended: its ``speech_end`` mark, the moment its
    last voiced sample reached the bot (``pipeline.room.ArrivalClock``). Unlike
    ``Utterance.end`` (seconds into that member's own audio, which Discord does not send
    while they are silent) it compares across members, and it does not depend on how far
    behind each member's lane is.
    """
    return (utterance.marks.get("speech_end", utterance.end), utterance.id, language)


class DiscordInputTransport(BaseInputTransport):
    """Pushes each member's decoded audio into the pipeline.

    Args:
        params: Transport parameters.
    """

    def __init__(self, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self.frames_received = 0
        self.frames_dropped = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._loop = asyncio.get_running_loop()
        await self.set_transport_ready(frame)
        self._accepting = True

    async def stop(self, frame: EndFrame) -> None:
        self._accepting = False
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        self._accepting = False
        await super().cancel(frame)

    def receive_audio(self, user_id: int | str, pcm: bytes) -> None:
        """Take one chunk of a member's 16 kHz mono int16 audio; safe from any thread.

        Audio that arrives before the pipeline started or after it stopped is dropped:
        there is nobody to hand it to.
        """
        loop = self._loop
        if not self._accepting or loop is None or loop.is_closed() or not pcm:
            self.frames_dropped += 1
            return
        rate = self._params.audio_in_sample_rate or 16000
        frame = UserAudioRawFrame(audio=bytes(pcm), sample_rate=rate, num_channels=1, user_id=str(user_id))
        # Stamped here, on the receiver's thread: the loop may get to it later.
        frame.metadata[ARRIVED_AT] = time.monotonic()
        self.frames_received += 1
        # The receiver calls us on its socket thread; the queue belongs to the loop.
        # Coroutines scheduled this way start in submission order, so one member's
        # chunks stay in order.
        asyncio.run_coroutine_threadsafe(self._deliver(frame), loop)

    async def _deliver(self, frame: UserAudioRawFrame) -> None:
        if self._accepting:
            await self.push_audio_frame(frame)


@dataclass
class _Pending:
    """What the output side knows about one utterance still in flight."""

    utterance: Utterance
    first_seen: float = field(default_factory=time.monotonic)
    announced: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)  # finished or abandoned
    dropped: bool = False


class DiscordOutputTransport(BaseOutputTransport):
    """Plays interpretations into the channel's audio source, in order of speech end.

    Args:
        transport: The owning transport (its ``on_caption`` event fires here).
        sink: The audio source discord.py plays.
        room: Gives the languages an utterance will be interpreted into, so its place in
            the queue can be held before the translation exists (``None``: hold it from
            the first translation on).
        params: Transport parameters.
        max_wait_s: An utterance whose interpretation has not completed after this long
            is given up on, so a lost frame never stalls the channel's queue.
    """

    #: Frames this transport consumes itself instead of pipecat's media sender, which
    #: would re-chunk interpretation audio (losing the utterance it belongs to) and pace
    #: it again although discord.py's player already plays at real time.
    routed = (
        CaptionFrame,
        InterpretationResultFrame,
        TranslationsDoneFrame,
        UtteranceAudioFrame,
        UtteranceTranscriptionFrame,
        UtteranceTranslationFrame,
        InterpretationAudioFrame,
        InterpretationDoneFrame,
        UtteranceDroppedFrame,
        ImageFrame,
        NoticeFrame,
    )

    def __init__(
        self,
        transport: DiscordVoiceTransport,
        sink: InterpretationSink,
        *,
        room: Room | None,
        params: TransportParams,
        max_wait_s: float = 120.0,
        sweep_interval_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._sink = sink
        self._room = room
        self._max_wait = max_wait_s
        self._sweep_interval = sweep_interval_s
        self._pending: dict[int, _Pending] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def pending_utterances(self) -> int:
        """Utterances whose interpretation is not complete yet."""
        return len(self._pending)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._sweeper is None:
            self._sweeper = self.create_task(self._sweep_forever(), "discord-output-sweep")

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_sweeper()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_sweeper()
        self._pending.clear()
        self._sink.clear()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        await self._stop_sweeper()
        await super().cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, self.routed):
            # Skip BaseOutputTransport's media sender for these (see ``routed``) but keep
            # FrameProcessor's own bookkeeping.
            await FrameProcessor.process_frame(self, frame, direction)
            await self._route(frame)
            await self.push_frame(frame, direction)
        else:
            await super().process_frame(frame, direction)

    # -- routing ------------------------------------------------------------------

    async def _route(self, frame: Frame) -> None:
        if isinstance(frame, CaptionFrame):
            await self._transport.emit_caption(frame)
            return
        if isinstance(frame, (ImageFrame, NoticeFrame)):
            await self._transport.emit(frame)
            return
        utterance: Utterance | None = getattr(frame, "utterance", None)
        if utterance is None:
            return
        pending = self._pending.get(utterance.id)
        if isinstance(frame, InterpretationResultFrame):
            # Everything of this utterance has arrived: nothing can still hold its place.
            if pending is not None:
                self._give_up(pending)
                self._pending.pop(utterance.id, None)
            return
        if pending is None:
            if isinstance(frame, UtteranceDroppedFrame) or (
                isinstance(frame, UtteranceAudioFrame) and not frame.interpreted
            ):
                # Dropped before we ever saw it, or speech a streaming recogniser interprets
                # under other utterances: nothing to hold a place for.
                return
            pending = self._pending[utterance.id] = _Pending(utterance)
            if self._room is not None and utterance.kind != "voice":
                # (voice-changer stretches have one "language" of their own: announced
                # with their first audio)
                for language in self._room.targets_for(utterance.user_id):
                    self._announce(pending, language)
        if isinstance(frame, UtteranceTranslationFrame):
            self._announce(pending, frame.target_language)
        elif isinstance(frame, TranslationsDoneFrame):
            # A language held for but not translated (the room changed in between, or MT
            # failed for it) never gets audio: its slot must not hold the queue.
            for language in pending.announced - pending.settled - set(frame.translations):
                self._settle_key(pending, language, finished=False)
        elif isinstance(frame, InterpretationAudioFrame):
            self._play(pending, frame)
        elif isinstance(frame, InterpretationDoneFrame):
            self._settle_key(pending, frame.target_language, finished=True)
        elif isinstance(frame, UtteranceDroppedFrame):
            self._give_up(pending)

    def _announce(self, pending: _Pending, language: str) -> None:
        if pending.dropped or language in pending.announced:
            return
        pending.announced.add(language)
        self._sink.announce(playback_key(pending.utterance, language))

    def _play(self, pending: _Pending, frame: InterpretationAudioFrame) -> None:
        language = frame.target_language
        if pending.dropped or language in pending.settled or not frame.audio:
            return
        self._announce(pending, language)
        self._sink.enqueue(
            frame.audio, frame.sample_rate, key=playback_key(pending.utterance, language)
        )
        pending.utterance.mark("first_audio_out")

    def _settle_key(self, pending: _Pending, language: str, *, finished: bool) -> None:
        if language not in pending.announced or language in pending.settled:
            return
        pending.settled.add(language)
        key = playback_key(pending.utterance, language)
        if finished:
            self._sink.finish(key)
        else:
            self._sink.abandon(key)

    def _give_up(self, pending: _Pending) -> None:
        pending.dropped = True
        for language in pending.announced - pending.settled:
            self._settle_key(pending, language, finished=False)

    # -- housekeeping -------------------------------------------------------------

    async def _sweep(self) -> None:
        """A safety net: an utterance whose frames stopped coming (a bug, a lost frame)
        gives up its place after ``max_wait_s`` instead of stalling the channel."""
        now = time.monotonic()
        for pending in list(self._pending.values()):
            if now - pending.first_seen > self._max_wait:
                logger.warning(
                    f"utterance {pending.utterance.id} of {pending.utterance.user_id} did not "
                    f"complete in {self._max_wait:.0f} s; giving up its place in the queue"
                )
                self._give_up(pending)
                self._pending.pop(pending.utterance.id, None)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            await self._sweep()

    async def _stop_sweeper(self) -> None:
        if self._sweeper is not None:
            task, self._sweeper = self._sweeper, None
            await self.cancel_task(task)


class DiscordVoiceTransport(BaseTransport):
    """One Discord voice channel as a pipecat transport.

    Build the pipeline as ``Pipeline([transport.input(), *build_cascade(...),
    transport.output()])`` and wire the voice receiver's ``on_audio`` to
    :meth:`receive_audio`.

    Events:
        on_caption(transport, caption): a ``CaptionFrame`` (partial while someone
            speaks, then final with every translation).
        on_image(transport, image): an ``ImageFrame`` (a picture someone asked for).
        on_notice(transport, notice): a ``NoticeFrame`` for one member.

    Args:
        sink: The ``InterpretationAudioSource`` discord.py plays.
        room: The room whose languages decide which interpretations to hold a place for.
        params: Transport parameters (defaults: :class:`DiscordTransportParams`).
        max_wait_s: See :class:`DiscordOutputTransport`.
    """

    def __init__(
        self,
        sink: InterpretationSink,
        *,
        room: Room | None = None,
        params: TransportParams | None = None,
        max_wait_s: float = 120.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._sink = sink
        self._room = room
        self._params = params or DiscordTransportParams()
        self._max_wait = max_wait_s
        self._input: DiscordInputTransport | None = None
        self._output: DiscordOutputTransport | None = None
        self._register_event_handler("on_caption")
        self._register_event_handler("on_image")
        self._register_event_handler("on_notice")

    @property
    def sink(self) -> InterpretationSink:
        """Where interpretation audio goes."""
        return self._sink

    def input(self) -> DiscordInputTransport:
        if self._input is None:
            self._input = DiscordInputTransport(self._params, name=self._input_name)
        return self._input

    def output(self) -> DiscordOutputTransport:
        if self._output is None:
            self._output = DiscordOutputTransport(
                self, self._sink, room=self._room, params=self._params,
                max_wait_s=self._max_wait, name=self._output_name,
            )
        return self._output

    def receive_audio(self, user_id: int | str, pcm: bytes) -> None:
        """The voice receiver's ``on_audio``: one member's 16 kHz mono audio, any thread."""
        self.input().receive_audio(user_id, pcm)

    async def emit_caption(self, caption: CaptionFrame) -> None:
        """Fire ``on_caption`` for a caption."""
        await self._call_event_handler("on_caption", caption)

    async def emit(self, frame: ImageFrame | NoticeFrame) -> None:
        """Fire ``on_image`` or ``on_notice``."""
        await self._call_event_handler("on_image" if isinstance(frame, ImageFrame) else "on_notice", frame)
