"""One interpretation session: a room's pipeline, its participants and their consent.

Every way of using polyvox is a transport plus an :class:`InterpretationSession`:

* file mode (``pipeline.file_mode``): a transport that plays recordings in and collects
  what comes out;
* a WebRTC room (``transports.webrtc``), a Discord voice channel (``transports.discord``),
  a phone call (``transports.telephony``): transports that move audio and render frames.

The session builds ``[transport.input(), *cascade, transport.output()]``, runs it, and
owns who is in the room: :meth:`~InterpretationSession.join`,
:meth:`~InterpretationSession.leave` (the participant's speech in progress is still
interpreted, then their state is released in every stage through
:class:`~pipeline.participants.ParticipantState`), and voice consent (applied at once,
in every session, through ``voices.consent.VoiceConsent``). Transports import this
module and frames, never a processor.

The composition root (``bot.app``) makes a :class:`SessionFactory` from the settings
once per process; transports ask it for sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from pipeline.cascade import Engines, build_cascade
from pipeline.engines.calls import StageTimeouts
from pipeline.errors import PolyvoxError
from pipeline.frames import VoiceConsentFrame
from pipeline.latency import SessionStats
from pipeline.participants import ParticipantState
from pipeline.room import Participant, Room
from pipeline.segmenter import SegmenterParams
from pipeline.streaming import StreamingParams

if TYPE_CHECKING:
    from voices.consent import VoiceConsent

__all__ = ["InterpretationParams", "InterpretationSession", "SessionError", "SessionFactory"]

#: Builds extra processors placed after the cascade (tests, plugins).
ExtraProcessors = Callable[[Room], list[FrameProcessor]]


class SessionError(PolyvoxError):
    """A session could not start, or was used after it stopped."""


@dataclass
class InterpretationParams:
    """How every session of a process interprets (from ``config.yaml``).

    Attributes:
        segmenter: Utterance segmentation.
        listener_languages: Languages every utterance is interpreted into by default.
        default_language: Spoken language assumed for a participant who set none.
        max_pending: Per-participant backlog limit of each stage (``None``: unlimited,
            for file mode, where input arrives faster than real time on purpose).
        warn_slow: Warn when ASR runs slower than real time.
        voice_capture: Clone each participant from their first utterances when the TTS
            engine clones voices.
        voice_params: ``voices.capture.VoiceCaptureParams``.
        streaming: Live interpretation (recognition while people speak, speculative
            endpointing, simultaneous mode) when the ASR engine streams; ``None``: whole
            utterances after each pause.
        timeouts: Deadlines of engine calls; a call past its deadline costs only its
            utterance (``pipeline.engines.calls``).
        engine_concurrency: Engine calls of one stage running at once (all rooms' stages
            have their own).
        drain_timeout_s: Longest a departing participant's last utterances may take.
        start_timeout_s: Longest the pipeline may take to start.
        stop_timeout_s: Longest an ending pipeline may take before it is cancelled.
        mode: What rooms do with speech by default: ``interpret``, or ``voice`` (the
            voice changer, with a ``vc`` engine).
        nonverbal: ``pipeline.nonverbal.NonverbalParams``: laughter, crying and sighs
            carried into the interpretation (with an ``events`` engine); ``None``: off.
        voice_changer: ``pipeline.voice_changer.VoiceChangerParams``.
        images: ``pipeline.imagine.ImageParams``: speech-to-image requests; ``None``: off.
    """

    segmenter: SegmenterParams = field(default_factory=SegmenterParams)
    listener_languages: list[str] = field(default_factory=lambda: ["es"])
    default_language: str = "en"
    max_pending: int | None = 8
    warn_slow: bool = True
    voice_capture: bool = True
    voice_params: Any | None = None
    streaming: StreamingParams | None = field(default_factory=StreamingParams)
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    engine_concurrency: int = 4
    drain_timeout_s: float = 60.0
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 20.0
    mode: str = "interpret"
    nonverbal: Any | None = None
    voice_changer: Any | None = None
    images: Any | None = None


class InterpretationSession:
    """One conversation's pipeline, participants and consent, for any transport.

    Args:
        engines: The process's loaded engines.
        transport: Moves audio in and renders what comes out (pipecat ``BaseTransport``).
        params: How to interpret.
        consent: The voice consent policy (``voices.consent.VoiceConsent``); ``None``:
            no enrolled voices, opt-outs for the session only.
        room: The participants and languages (default: a new room from ``params``).
        name: For logs.
        extra_processors: More processors after the cascade (tests, plugins).
        on_error: Called with each error the pipeline reports.
        stats: Where live counters go (default: a fresh ``SessionStats``).
    """

    def __init__(
        self,
        engines: Engines,
        transport: BaseTransport,
        params: InterpretationParams | None = None,
        *,
        consent: VoiceConsent | None = None,
        room: Room | None = None,
        name: str = "session",
        extra_processors: ExtraProcessors | None = None,
        on_error: Callable[[str], Awaitable[None] | None] | None = None,
        stats: SessionStats | None = None,
    ) -> None:
        self.engines = engines
        self.transport = transport
        self.params = params or InterpretationParams()
        self.consent = consent
        self.name = name
        self.room = room or Room(self.params.listener_languages, default_language=self.params.default_language)
        self.room.mode = self.params.mode
        self.room.nonverbal = self.params.nonverbal is not None and bool(getattr(self.params.nonverbal, "enabled", True))
        self.room.image_trigger = getattr(self.params.images, "trigger", None)
        self.errors: list[str] = []
        #: Speculations, clause commits and partial captions of this session.
        self.stats = stats or SessionStats()
        self._on_error = on_error
        self.processors: list[FrameProcessor] = build_cascade(
            engines,
            self.room,
            segmenter=self.params.segmenter,
            warn_slow=self.params.warn_slow,
            max_pending=self.params.max_pending,
            voice_capture=self.params.voice_capture,
            consent=consent,
            voice_params=self.params.voice_params,
            streaming=self.params.streaming,
            stats=self.stats,
            timeouts=self.params.timeouts,
            concurrency=self.params.engine_concurrency,
            nonverbal=self.params.nonverbal,
            voice_changer=self.params.voice_changer,
            images=self.params.images,
        )
        if extra_processors is not None:
            self.processors += extra_processors(self.room)
        self._pipeline_processors = [transport.input(), *self.processors, transport.output()]
        self.worker = PipelineWorker(
            Pipeline(self._pipeline_processors),
            params=PipelineParams(enable_metrics=False),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe: Callable[[], None] | None = None

        @self.worker.event_handler("on_pipeline_started")
        async def _started(_worker: Any, _frame: Frame) -> None:
            self._started.set()

        @self.worker.event_handler("on_pipeline_error")
        async def _error(_worker: Any, frame: ErrorFrame) -> None:
            self.errors.append(frame.error)
            logger.warning(f"{self.name}: {frame.error}")
            if self._on_error is not None:
                outcome = self._on_error(frame.error)
                if asyncio.iscoroutine(outcome):
                    await outcome

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the pipeline runs and the session has not been asked to stop."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def ended(self) -> bool:
        """Whether the pipeline has run and finished."""
        return self._task is not None and self._task.done()

    async def start(self) -> None:
        """Start the pipeline; returns once every stage is ready.

        Raises:
            SessionError: the pipeline did not start in ``params.start_timeout_s``.
        """
        if self._task is not None:
            return
        runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await runner.add_workers(self.worker)
        self._task = asyncio.create_task(runner.run(), name=f"session-{self.name}")
        waiter = asyncio.ensure_future(self._started.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=self.params.start_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self._cancel()
            raise SessionError(f"{self.name}: the pipeline did not start in {self.params.start_timeout_s:.0f} s")
        if self.consent is not None:
            self._unsubscribe = self.consent.subscribe(self._consent_changed)
        logger.debug(f"{self.name}: pipeline started")

    async def stop(self, *, drain: bool = True) -> None:
        """End the session. Idempotent.

        Args:
            drain: Let every stage finish what it holds (an ``EndFrame``: queued speech is
                still interpreted and no engine call is cut off mid-way); ``False``
                cancels at once.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is None:
            return
        first = not self._stopping
        self._stopping = True
        for task in list(self._leaving.values()):
            task.cancel()
        if first and drain and not self._task.done():
            await self.worker.queue_frame(EndFrame())
        if not drain:
            await self._cancel()
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self.params.stop_timeout_s)
        except TimeoutError:
            logger.warning(f"{self.name}: pipeline did not end in {self.params.stop_timeout_s:.0f} s; cancelling")
            await self._cancel()

    async def end_of_input(self) -> None:
        """No more audio will come (file mode): finish everything queued, then stop."""
        await self.stop(drain=True)

    async def wait(self) -> None:
        """Until the pipeline has ended."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _cancel(self) -> None:
        if self._task is None or self._task.done():
            return
        await self.worker.cancel()
        try:
            await asyncio.wait_for(self._task, timeout=self.params.stop_timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()

    async def queue_frame(self, frame: Frame) -> None:
        """Send a frame into the pipeline (at its start)."""
        await self.worker.queue_frame(frame)

    # -- participants ------------------------------------------------------------------

    async def join(
        self,
        user_id: str,
        *,
        language: str | None = None,
        name: str = "",
        hears: str | None = None,
        identity: str | None = None,
        clone_voice: bool = True,
        listener: bool = False,
    ) -> Participant:
        """Add a participant (or update one), with their enrolled voice when they have one.

        Args:
            user_id: Their id in this session (the transport's).
            language: What they speak (default: ``params.default_language``).
            name: Display name for captions.
            hears: The language they listen in, when the transport gives each their own.
            identity: Their persistent identity for voices and consent, if known.
            clone_voice: ``False`` when they refused cloning on joining.
            listener: They only listen (their audio, if any, is not interpreted).
        """
        participant = self.room.join(user_id, language=language, name=name, hears=hears, identity=identity)
        participant.listener = listener
        if not clone_voice:
            participant.voice_opt_out = True
            participant.voice = None
        elif self.consent is not None and participant.voice is None:
            if not await self.consent.allowed(participant.identity):
                participant.voice_opt_out = True
            else:
                participant.voice = await self.consent.enrolled_voice(participant.identity)
        return participant

    async def leave(self, user_id: str, *, drain: bool = True) -> None:
        """A participant left: interpret what they still said, then release them everywhere.

        Their speech in progress is cut into a last utterance and interpreted for the
        others (``drain``), bounded by ``params.drain_timeout_s``; then every stage drops
        their state. Concurrent calls for the same participant share one departure.
        """
        running = self._leaving.get(user_id)
        if running is None:
            running = asyncio.ensure_future(self._depart(user_id, drain))
            self._leaving[user_id] = running
            running.add_done_callback(lambda _t: self._leaving.pop(user_id, None))
        await asyncio.shield(running)

    async def _depart(self, user_id: str, drain: bool) -> None:
        holders = self.state_holders()
        if drain and self.running:
            try:
                await asyncio.wait_for(self._drain(user_id, holders), timeout=self.params.drain_timeout_s)
            except TimeoutError:
                logger.warning(f"{self.name}: {user_id}'s last utterances did not finish in time")
        for holder in holders:
            try:
                await holder.release_participant(user_id)
            except Exception as exc:  # noqa: BLE001 - release the rest regardless
                logger.opt(exception=exc).warning(f"{self.name}: releasing {user_id} in {holder} failed: {exc}")
        self.room.leave(user_id)

    async def _drain(self, user_id: str, holders: list[ParticipantState]) -> None:
        await self._quiet(user_id, holders)
        for holder in holders:
            await holder.flush_participant(user_id)
        await self._quiet(user_id, holders)

    @staticmethod
    async def _quiet(user_id: str, holders: list[ParticipantState]) -> None:
        # Frames hop between stages through pipecat's queues, so a stage that looks idle
        # may be about to receive work: quiet means nobody was busy for a few polls.
        quiet = 0
        while quiet < 4:
            await asyncio.sleep(0.05)
            quiet = 0 if any(h.participant_busy(user_id) for h in holders) else quiet + 1

    def state_holders(self) -> list[ParticipantState]:
        """Every processor of the pipeline that keeps per-participant state, in order."""
        return [p for p in self._pipeline_processors if isinstance(p, ParticipantState)]

    def holding(self, user_id: str) -> list[str]:
        """Names of the stages that still hold something of ``user_id`` (``[]`` once released)."""
        return [type(h).__name__ for h in self.state_holders() if h.holds_participant(user_id)]

    # -- consent -----------------------------------------------------------------------

    async def set_voice_allowed(self, user_id: str, allowed: bool) -> None:
        """A participant allowed or refused cloning, for this session (the page's switch).

        Applies at once: a refusal switches their interpretation to the neutral voice and
        discards what was captured. A participant with an identity has their choice
        stored too (and applied in every other session) through the consent policy.
        """
        participant = self.room.participants.get(user_id)
        if participant is None:
            return
        if participant.identity is not None and self.consent is not None:
            await self.consent.set_allowed(participant.identity, allowed)  # notifies us too
        else:
            await self._apply_consent(participant, allowed, forget=False)

    async def _consent_changed(self, identity: str, allowed: bool, forgotten: bool) -> None:
        for participant in list(self.room.participants.values()):
            if participant.identity == identity:
                await self._apply_consent(participant, allowed, forget=forgotten)
            voice = participant.changer_voice
            if voice is not None and not voice.neutral and voice.name == identity:
                # Whoever spoke in their voice is checked again: a refusal takes it away.
                try:
                    participant.changer_voice = await self._changer_voice(identity)
                except PolyvoxError:
                    participant.changer_voice = None
                    logger.info(f"{self.name}: {participant.user_id} can no longer use the voice of {identity}")

    # -- voice changer and pictures ------------------------------------------------------

    async def _changer_voice(self, name: str | None) -> Any:
        from pipeline.voice_changer import resolve_changer_voice

        if self.engines.vc is None:
            raise SessionError("this server has no voice-conversion engine (vc.engine), so there is no voice mode")
        return await resolve_changer_voice(self.engines.vc, self.consent, name)

    async def set_mode(self, user_id: str, mode: str | None, *, voice: str | None = None) -> Participant:
        """Switch one participant between interpretation and the voice changer.

        Args:
            user_id: The participant.
            mode: ``interpret``, ``voice``, or ``None`` for the room's mode.
            voice: The voice-changer voice: a neutral voice's name or the identity of
                someone who enrolled theirs as a voice-changer target (``None``: the
                default neutral voice).

        Raises:
            SessionError: no voice-conversion engine (for ``voice``), or an unknown mode.
            VoiceTargetError: ``voice`` is not a voice one may use.
        """
        from pipeline.room import MODES

        if mode is not None and mode not in MODES:
            raise SessionError(f"unknown mode {mode!r} (choose from: {', '.join(MODES)})")
        participant = self.room.participant(user_id)
        if mode == "voice" or voice is not None:
            participant.changer_voice = await self._changer_voice(voice)
        participant.mode = mode
        return participant

    def request_image(self, user_id: str) -> bool:
        """The participant's next sentence is a picture request (the page's "draw what I
        say", Discord's ``/imagine``); ``False`` when this session makes no pictures."""
        images = self.params.images
        if images is None:
            return False
        self.room.participant(user_id).imagine_until = time.monotonic() + images.request_s
        return True

    async def _apply_consent(self, participant: Participant, allowed: bool, *, forget: bool) -> None:
        participant.voice_opt_out = not allowed
        if not allowed or forget:
            participant.voice = None
        if allowed and self.consent is not None and participant.voice is None:
            participant.voice = await self.consent.enrolled_voice(participant.identity)
        if self.running:
            await self.worker.queue_frame(VoiceConsentFrame(participant.user_id, allowed, forget=forget))


@dataclass
class SessionFactory:
    """Makes sessions for transports: the engines, parameters and consent of one process.

    Built once by the composition root (``bot.app.session_factory``) and handed to every
    transport's server, which then needs to know nothing about the cascade.
    """

    engines: Engines
    params: InterpretationParams = field(default_factory=InterpretationParams)
    consent: VoiceConsent | None = None
    extra_processors: ExtraProcessors | None = None

    def create(
        self,
        transport: BaseTransport,
        *,
        name: str,
        room: Room | None = None,
        on_error: Callable[[str], Awaitable[None] | None] | None = None,
        stats: SessionStats | None = None,
        **changes: Any,
    ) -> InterpretationSession:
        """A session (not started) for ``transport``.

        Args:
            transport: The session's transport.
            name: For logs.
            room: Its participants and languages (default: a new room from the params).
            on_error: See :class:`InterpretationSession`.
            stats: See :class:`InterpretationSession`.
            **changes: :class:`InterpretationParams` fields to change for this session
                (e.g. ``max_pending=None`` for file mode).
        """
        params = replace(self.params, **changes) if changes else self.params
        return InterpretationSession(
            self.engines,
            transport,
            params,
            consent=self.consent,
            room=room,
            name=name,
            extra_processors=self.extra_processors,
            on_error=on_error,
            stats=stats,
        )
