"""The WebRTC room server: signalling API, the browser page, one pipeline per room.

``polyvox serve`` calls :func:`serve_webrtc`. Tests and benchmarks use
:class:`RoomServer` directly (``async with RoomServer(...) as server``).

API (all JSON; errors are ``{"error": "..."}`` with a 4xx status):

* ``POST /api/rooms/{room}/join`` ``{"sdp", "type": "offer", "name", "speaks", "hears",
  "token"?}`` → ``{"sdp", "type": "answer", "participant_id", "key"}`` (ICE gathered, no
  trickle);
* ``DELETE /api/rooms/{room}/participants/{id}`` with header ``X-Participant-Key: <key>``
  (``key`` from the join answer; ids are public, keys are not) leaves;
* ``GET /api/rooms/{room}`` lists participants and languages;
* ``GET /api/languages`` what may be spoken and heard; ``GET /healthz``; ``GET /metrics``.

The client opens a data channel named ``captions``; the server sends one JSON message
per utterance on it: ``{"type": "caption", "participant_id", "name", "language",
"text", "translations": {...}, "final": true}`` (plus an earlier ``"final": false``
one with the transcript alone, so captions appear before the translation).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from loguru import logger
from pipecat.frames.frames import EndFrame, ErrorFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.cascade import Engines, build_cascade
from pipeline.errors import ConfigError
from pipeline.processors.audio_input import AudioInputProcessor
from pipeline.processors.denoise import DenoiseProcessor
from pipeline.processors.lanes import UserLaneProcessor
from pipeline.processors.vad import VADSegmenterProcessor
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams
from transports.webrtc.ice import set_host_addresses
from transports.webrtc.metrics import ServerMetrics
from transports.webrtc.settings import WebRTCSettings
from transports.webrtc.tokens import room_secret, verify_token
from transports.webrtc.transport import WebRTCRoomParams, WebRTCRoomTransport

__all__ = ["RoomServer", "RoomSession", "VoiceCaptureFactory", "check_security", "serve_webrtc"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Longest a departing participant's last utterances may take to finish.
DRAIN_TIMEOUT_S = 60.0
#: Longest an emptied room's pipeline may take to end before it is cancelled.
CLOSE_TIMEOUT_S = 20.0

#: Builds a processor that captures voice profiles for a room: it sits after the
#: cascade, reads ``UtteranceAudioFrame`` and sets ``room.participants[id].voice``.
VoiceCaptureFactory = Callable[[Room], FrameProcessor]


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RoomSession:
    """One open room: its participants, transport and running pipeline."""

    name: str
    room: Room
    transport: WebRTCRoomTransport
    processors: list[FrameProcessor]
    worker: PipelineWorker
    task: asyncio.Task[None] | None = None
    keys: dict[str, str] = field(default_factory=dict)
    cleanups: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def participant_ids(self) -> list[str]:
        """Connected participants (not those whose last words are still being interpreted)."""
        return list(self.transport.peers)

    def describe(self) -> dict[str, Any]:
        people = []
        for pid in self.participant_ids:
            p = self.room.participants.get(pid)
            if p is not None:
                people.append({"id": pid, "name": p.name, "speaks": p.language, "hears": p.hears or p.language})
        languages = sorted({x for p in people for x in (p["speaks"], p["hears"])})
        return {"room": self.name, "participants": people, "languages": languages}


class RoomServer:
    """The HTTP server and its rooms.

    Args:
        engines: Loaded engines, shared by every room.
        settings: Limits, security and sound.
        host: Address to listen on.
        port: Port (0: any free port; see :attr:`port` after :meth:`start`).
        segmenter: Utterance segmentation of every room.
        max_pending: Per-participant backlog limit of each stage.
        warn_slow: Warn when a stage runs slower than real time.
        default_language: Spoken language assumed when a client gives none.
        secret: Token signing secret; default: ``POLYVOX_ROOM_SECRET`` from the environment.
        voice_capture: Factory of an extra per-room processor placed after the cascade
            (see :data:`VoiceCaptureFactory`). The cascade itself already captures
            voices when the TTS engine clones them.
        voice_store: Enrolled voice profiles and opt-outs, for the cascade.
        voice_params: ``voices.capture.VoiceCaptureParams``, for the cascade.

    Raises:
        ConfigError: listening on a non-loopback address without a secret.
    """

    def __init__(
        self,
        engines: Engines,
        settings: WebRTCSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        segmenter: SegmenterParams | None = None,
        max_pending: int = 8,
        warn_slow: bool = True,
        default_language: str = "en",
        secret: str | None = None,
        voice_capture: VoiceCaptureFactory | None = None,
        voice_store: Any | None = None,
        voice_params: Any | None = None,
    ) -> None:
        self.engines = engines
        self.voice_store = voice_store
        self.voice_params = voice_params
        self.settings = settings or WebRTCSettings()
        self.host = host
        self.port = port
        self.segmenter = segmenter
        self.max_pending = max_pending
        self.warn_slow = warn_slow
        self.default_language = default_language
        self.voice_capture = voice_capture
        self._secret = secret if secret is not None else room_secret()
        loopback = _is_loopback(host)
        self.require_token = check_security(host, self.settings, self._secret)
        self.rooms: dict[str, RoomSession] = {}
        self.metrics = ServerMetrics(
            rooms=lambda: len(self.rooms),
            participants=lambda: sum(len(s.participant_ids) for s in self.rooms.values()),
        )
        self._create_lock = asyncio.Lock()
        self._joins: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()
        self._ice_loopback = loopback

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (returns once bound)."""
        set_host_addresses(self.settings.ice_addresses, include_loopback=self._ice_loopback)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the port bound for port=0
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        logger.info(
            f"WebRTC room server on {self.url}/ (tokens {'required' if self.require_token else 'not required'})"
        )

    async def stop(self) -> None:
        """Close every room and stop listening."""
        for name in list(self.rooms):
            session = self.rooms.pop(name)
            await self._close_session(session)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RoomServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- languages ----------------------------------------------------------------

    def speakable(self) -> list[str]:
        """Languages a participant may speak (the ASR engine's)."""
        return sorted(self.engines.asr.languages)

    def hearable(self) -> list[str]:
        """Languages a participant may listen in: spoken ones, and MT targets TTS can speak."""
        tts = set(self.engines.tts.languages)
        targets = {t for _, t in self.engines.mt.pairs() if t in tts}
        return sorted(targets | set(self.speakable()))

    # -- rooms --------------------------------------------------------------------

    async def _session(self, name: str) -> RoomSession:
        async with self._create_lock:
            session = self.rooms.get(name)
            if session is not None:
                return session
            if len(self.rooms) >= self.settings.max_rooms:
                raise _ApiError(429, f"the server has its maximum of {self.settings.max_rooms} rooms open")
            session = await self._open_session(name)
            self.rooms[name] = session
            return session

    async def _open_session(self, name: str) -> RoomSession:
        room = Room([], default_language=self.default_language)
        params = WebRTCRoomParams(foreign_gain=self.settings.foreign_gain, duck_gain=self.settings.duck_gain)
        transport = WebRTCRoomTransport(room, params, metrics=self.metrics)
        processors = build_cascade(
            self.engines,
            room,
            segmenter=self.segmenter,
            warn_slow=self.warn_slow,
            max_pending=self.max_pending,
            voice_store=self.voice_store,
            voice_params=self.voice_params,
        )
        extra = [self.voice_capture(room)] if self.voice_capture is not None else []
        worker = PipelineWorker(
            Pipeline([transport.input(), *processors, *extra, transport.output()]),
            params=PipelineParams(enable_metrics=False),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker: Any, _frame: Any) -> None:
            started.set()

        @worker.event_handler("on_pipeline_error")
        async def _error(_worker: Any, frame: ErrorFrame) -> None:
            logger.warning(f"room {name}: {frame.error}")

        runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await runner.add_workers(worker)
        session = RoomSession(name, room, transport, processors, worker)
        session.task = asyncio.create_task(runner.run(), name=f"room-{name}")
        try:
            await asyncio.wait_for(started.wait(), timeout=15)
        except TimeoutError:
            session.task.cancel()
            raise _ApiError(503, "the room's pipeline did not start") from None
        logger.info(f"room {name} opened")
        return session

    async def _close_session(self, session: RoomSession) -> None:
        await session.transport.close()
        for task in list(session.cleanups):
            task.cancel()
        # End, not cancel: EndFrame lets each stage finish the call it is in, so no
        # engine thread is still using a participant's model state when it is freed.
        await session.worker.queue_frame(EndFrame())
        if session.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(session.task), timeout=CLOSE_TIMEOUT_S)
            except TimeoutError:
                logger.warning(f"room {session.name}: pipeline did not end in {CLOSE_TIMEOUT_S:.0f} s; cancelling")
                await session.worker.cancel()
                try:
                    await asyncio.wait_for(session.task, timeout=CLOSE_TIMEOUT_S)
                except (TimeoutError, asyncio.CancelledError):
                    pass
        logger.info(f"room {session.name} closed")

    async def leave(self, room_name: str, participant_id: str) -> bool:
        """Disconnect a participant now; their unfinished speech is still interpreted for
        the others, then every trace of them is released. An empty room is closed.

        Returns:
            Whether the participant was in the room.
        """
        session = self.rooms.get(room_name)
        if session is None or participant_id not in session.transport.peers:
            return False
        await session.transport.remove_participant(participant_id)
        session.keys.pop(participant_id, None)
        logger.info(f"room {room_name}: participant {participant_id} left")
        session.transport.send_json({"type": "participants", **session.describe()})
        task = asyncio.create_task(self._release(session, participant_id), name=f"release-{participant_id}")
        session.cleanups.add(task)
        task.add_done_callback(session.cleanups.discard)
        if not session.participant_ids:
            # Nobody left to hear anything: close at once (pending work is moot).
            if self.rooms.get(room_name) is session:
                del self.rooms[room_name]
            await self._close_session(session)
        return True

    async def _release(self, session: RoomSession, participant_id: str) -> None:
        """Let a departed participant's queued audio and utterances finish, then forget them.

        Cancelled when the room closes first: the pipeline's own clean-up then releases
        everything, after its stages have finished what they were doing.
        """
        drained = True
        try:
            await asyncio.wait_for(self._drain(session, participant_id), timeout=DRAIN_TIMEOUT_S)
        except TimeoutError:
            drained = False
            logger.warning(f"room {session.name}: {participant_id}'s last utterances did not finish in time")
        for proc in session.processors:
            if isinstance(proc, UserLaneProcessor):
                await proc.forget_lane(participant_id)
            if isinstance(proc, AudioInputProcessor):
                proc.forget(participant_id)
            if isinstance(proc, DenoiseProcessor) and drained:
                # Only once idle: freeing a model state under a running call crashes.
                await proc.forget(participant_id)
        session.room.leave(participant_id)

    async def _drain(self, session: RoomSession, participant_id: str) -> None:
        """Wait until the participant's queued audio, and every utterance cut from it, is done."""
        lanes = [p for p in session.processors if isinstance(p, UserLaneProcessor)]
        await self._quiet(lanes, participant_id)
        for proc in session.processors:
            if isinstance(proc, VADSegmenterProcessor):
                # Speech cut off by the departure becomes an utterance like any other.
                await proc.forget(participant_id)
        await self._quiet(lanes, participant_id)

    @staticmethod
    async def _quiet(lanes: list[UserLaneProcessor], participant_id: str) -> None:
        # Frames hop between stages through pipecat's queues, so an empty lane may be
        # about to receive work: idle means every lane stayed empty for a few polls.
        quiet = 0
        while quiet < 4:
            await asyncio.sleep(0.05)
            quiet = quiet + 1 if all(p.lane_idle(participant_id) for p in lanes) else 0

    # -- HTTP ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors], client_max_size=256 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/languages", self._languages)
        app.router.add_get("/api/rooms/{room}", self._room_info)
        app.router.add_post("/api/rooms/{room}/join", self._join)
        app.router.add_delete("/api/rooms/{room}/participants/{participant}", self._leave)
        return app

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "rooms": len(self.rooms), "participants": sum(len(s.participant_ids) for s in self.rooms.values())}
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _languages(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"speaks": self.speakable(), "hears": self.hearable(), "token_required": self.require_token}
        )

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser: the token decides
        own = f"{request.scheme}://{request.host}"
        if origin != own and origin not in self.settings.allowed_origins:
            raise _ApiError(403, "origin not allowed")

    def _room_name(self, request: web.Request) -> str:
        name = request.match_info["room"]
        if not _ROOM_NAME.match(name):
            raise _ApiError(400, "room names are 1-64 letters, digits, '-' or '_'")
        return name

    def _check_token(self, room: str, token: Any) -> None:
        if not self.require_token:
            return
        if not isinstance(token, str) or not token:
            raise _ApiError(401, "this server needs a room token (polyvox token ROOM)")
        assert self._secret is not None
        problem = verify_token(token, room, self._secret)
        if problem is not None:
            raise _ApiError(403, problem)

    def _rate_limit(self, request: web.Request) -> None:
        client = request.remote or "?"
        now = time.monotonic()
        window = self._joins.setdefault(client, deque())
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= self.settings.joins_per_minute:
            raise _ApiError(429, "too many join attempts; try again in a minute")
        window.append(now)
        if len(self._joins) > 10000:  # forget idle clients so the table stays small
            for key in [k for k, v in self._joins.items() if not v or now - v[-1] > 60]:
                del self._joins[key]

    async def _room_info(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        name = self._room_name(request)
        self._check_token(name, request.query.get("token") or _bearer(request))
        session = self.rooms.get(name)
        if session is None:
            return web.json_response({"room": name, "participants": [], "languages": []})
        return web.json_response(session.describe())

    async def _join(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        name = self._room_name(request)
        self._rate_limit(request)
        try:
            body = await request.json()
        except web.HTTPException:
            raise  # 413: the body is larger than any offer
        except Exception:  # noqa: BLE001 - any unparsable body is the client's mistake
            raise _ApiError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "the body must be a JSON object")
        self._check_token(name, body.get("token") or _bearer(request))
        sdp, kind = body.get("sdp"), body.get("type")
        if kind != "offer":
            raise _ApiError(400, "'type' must be 'offer'")
        if not isinstance(sdp, str) or "m=audio" not in sdp:
            raise _ApiError(400, "'sdp' must be an SDP offer with an audio track")
        speaks = body.get("speaks", self.default_language)
        if speaks not in self.speakable():
            raise _ApiError(400, f"cannot recognise speech in {speaks!r} (choose from: {', '.join(self.speakable())})")
        hears = body.get("hears") or speaks
        if hears not in self.hearable():
            raise _ApiError(400, f"cannot interpret into {hears!r} (choose from: {', '.join(self.hearable())})")
        display = body.get("name") or "guest"
        if not isinstance(display, str) or len(display) > 64:
            raise _ApiError(400, "'name' must be text of at most 64 characters")
        display = " ".join(display.split()) or "guest"

        existing = self.rooms.get(name)
        if existing is not None and len(existing.participant_ids) >= self.settings.max_participants:
            self.metrics.inc("polyvox_join_rejections_total")
            raise _ApiError(409, f"room {name} is full ({self.settings.max_participants} participants)")
        session = await self._session(name)
        if len(session.participant_ids) >= self.settings.max_participants:
            raise _ApiError(409, f"room {name} is full ({self.settings.max_participants} participants)")
        pid = uuid.uuid4().hex
        answer = await self._connect(session, pid, sdp, display, speaks, hears)
        # Participant ids are public (captions, listings); leaving needs this key too.
        key = session.keys[pid] = secrets.token_urlsafe(24)
        self.metrics.inc("polyvox_joins_total")
        logger.info(f"room {name}: {display!r} joined as {pid} (speaks {speaks}, hears {hears})")
        session.transport.send_json({"type": "participants", **session.describe()})
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "participant_id": pid, "key": key})

    async def _connect(
        self, session: RoomSession, pid: str, sdp: str, display: str, speaks: str, hears: str
    ) -> RTCSessionDescription:
        servers = [RTCIceServer(urls=url) for url in self.settings.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        transport = session.transport
        session.room.join(pid, language=speaks, name=display, hears=hears)
        track_out = transport.add_participant(pid, pc)

        @pc.on("track")
        def _on_track(track: Any) -> None:
            transport.attach_incoming(pid, track)

        @pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            transport.attach_channel(pid, channel)

            @channel.on("open")
            def _opened() -> None:
                transport.send_json({"type": "participants", **session.describe()}, to=[pid])

            if channel.readyState == "open":
                _opened()

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed") and pid in transport.peers:
                logger.info(f"room {session.name}: connection of {pid} {pc.connectionState}")
                await self.leave(session.name, pid)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(track_out)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # noqa: BLE001 - aiortc rejects bad SDP with assorted errors
            await transport.remove_participant(pid)
            session.room.leave(pid)
            if not session.participant_ids and self.rooms.get(session.name) is session:
                del self.rooms[session.name]
                await self._close_session(session)
            raise _ApiError(400, f"could not use the SDP offer: {str(exc)[:200] or type(exc).__name__}") from None
        return pc.localDescription

    async def _leave(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        name = self._room_name(request)
        pid = request.match_info["participant"]
        session = self.rooms.get(name)
        if session is None or pid not in session.transport.peers:
            raise _ApiError(404, "no such participant in this room")
        key = request.headers.get("X-Participant-Key") or request.query.get("key") or ""
        if not secrets.compare_digest(key, session.keys.get(pid, "")):
            raise _ApiError(403, "leaving needs the participant's key from the join answer")
        await self.leave(name, pid)
        return web.json_response({"left": pid})


def check_security(host: str, settings: WebRTCSettings, secret: str | None) -> bool:
    """Whether joining needs a token; fails when the settings would expose rooms.

    Call it before loading engines so a bad setup fails in milliseconds.

    Raises:
        ConfigError: a non-loopback ``host`` without a secret, or tokens required
            without a secret.
    """
    loopback = _is_loopback(host)
    if not loopback and not secret:
        raise ConfigError(
            f"server.host {host} is not a loopback address: set POLYVOX_ROOM_SECRET so joining needs a room token"
        )
    required = (bool(secret) or not loopback) if settings.require_token is None else settings.require_token
    if required and not secret:
        raise ConfigError("webrtc.require_token is on but POLYVOX_ROOM_SECRET is not set")
    return required


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Every error is JSON; client mistakes are 4xx, never 500."""
    try:
        return await handler(request)
    except _ApiError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)


async def serve_webrtc(
    engines: Engines,
    settings: WebRTCSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    segmenter: SegmenterParams | None = None,
    max_pending: int = 8,
    warn_slow: bool = True,
    default_language: str = "en",
    voice_capture: VoiceCaptureFactory | None = None,
    voice_store: Any | None = None,
    voice_params: Any | None = None,
    ready: Callable[[RoomServer], None] | None = None,
) -> None:
    """Run the room server until cancelled (``polyvox serve``).

    Args:
        engines: Loaded, warmed-up engines (``bot.app.load_engines``).
        settings: The ``webrtc`` section.
        host: ``server.host``.
        port: ``server.port``.
        segmenter: ``bot.app.segmenter_params(settings)``.
        max_pending: ``pipeline.max_pending_utterances``.
        warn_slow: ``pipeline.warn_slower_than_realtime``.
        default_language: ``languages.speaker``.
        voice_capture: An extra per-room processor after the cascade (tests, plugins).
        voice_store: Enrolled voice profiles and opt-outs.
        voice_params: Voice capture thresholds.
        ready: Called once the server listens (e.g. to print its address).

    Raises:
        ConfigError: a non-loopback ``host`` without ``POLYVOX_ROOM_SECRET``.
        OSError: the address is in use or cannot be bound.
    """
    server = RoomServer(
        engines,
        settings,
        host=host,
        port=port,
        segmenter=segmenter,
        max_pending=max_pending,
        warn_slow=warn_slow,
        default_language=default_language,
        voice_capture=voice_capture,
        voice_store=voice_store,
        voice_params=voice_params,
    )
    async with server:
        if ready is not None:
            ready(server)
        await asyncio.Event().wait()
