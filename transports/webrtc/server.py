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

The client opens a data channel named ``captions``; the server sends JSON messages on
it: captions ``{"type": "caption", "utterance_id", "participant_id", "name",
"language", "text", "translations": {...}, "final": bool}`` (``"final": false`` ones
with the transcript alone first, so captions appear before the translation), the
participant list ``{"type": "participants", ...}`` and, on joining, the voice notice
``{"type": "notice", "kind": "voice", "text"}``, and who is speaking or being
interpreted ``{"type": "activity", "participant_id", "speaking"|"interpreting": bool}``.
The page sends ``{"type": "voice", "clone": false}`` to refuse voice cloning (``true`` to
allow it), ``{"type": "mix", "original": 0..1}`` to move its balance between original
voices and interpretation, ``{"type": "ping"}`` every second (answered
``{"type": "pong"}``: a page that hears no pong knows the connection is gone),
``{"type": "imagine"}`` ("draw what I say": the next sentence is a picture request;
pictures come to everyone as ``{"type": "image", "participant_id", "name", "caption",
"prompt", "png_base64"}``) and ``{"type": "mode", "mode": "voice"|"interpret", "voice"?}``
(the voice changer). The join body may carry ``"mode"`` and ``"voice"`` too, and
``"nonverbal": false`` for a room it opens.
"""

from __future__ import annotations

import asyncio
import json
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

from pipeline.errors import ConfigError, PolyvoxError
from pipeline.languages import AUTO, display_name, is_auto, normalize
from pipeline.latency import SessionStats
from pipeline.room import Room
from pipeline.session import InterpretationSession, SessionError, SessionFactory
from transports.webrtc.hosts import is_loopback
from transports.webrtc.http_security import read_json_object, security_middlewares
from transports.webrtc.ice import set_host_addresses
from transports.webrtc.metrics import ServerMetrics
from transports.webrtc.settings import WebRTCSettings
from transports.webrtc.tokens import room_secret
from transports.webrtc.transport import WebRTCRoomParams, WebRTCRoomTransport
from transports.webrtc.validation import (
    MAX_BODY_BYTES,
    ClientInputError,
    bearer_token,
    check_room_token,
    keys_match,
    validate_display_name,
    validate_language,
    validate_participant_id,
    validate_participant_key,
    validate_room_name,
    validate_sdp_offer,
)

__all__ = ["RoomServer", "RoomSession", "check_security", "serve_webrtc"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
@dataclass
class RoomSession:
    """One open room: its transport, its interpretation session and the participants' keys."""

    name: str
    transport: WebRTCRoomTransport
    session: InterpretationSession
    keys: dict[str, str] = field(default_factory=dict)
    departures: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def room(self) -> Room:
        """Who is in the room and what they speak."""
        return self.session.room

    @property
    def participant_ids(self) -> list[str]:
        """Connected participants (not those whose last words are still being interpreted)."""
        return list(self.transport.peers)

    def describe(self) -> dict[str, Any]:
        people: list[dict[str, Any]] = []
        languages: set[str] = set()
        for pid in self.participant_ids:
            p = self.room.participants.get(pid)
            if p is not None:
                people.append(
                    {
                        "id": pid,
                        "name": p.name,
                        "speaks": p.language,
                        "hears": p.hears or p.language,
                        "voice_cloned": not p.voice_opt_out,
                        "listener": p.listener,
                        "mode": self.room.mode_of(pid),
                        "changer_voice": p.changer_voice.name if p.changer_voice is not None else None,
                        "via": self.transport.peers[pid].kind,
                    }
                )
                languages |= {p.language, p.hears or p.language}
        return {"room": self.name, "participants": people, "languages": sorted(languages)}


class RoomServer:
    """The HTTP server and its rooms.

    Args:
        factory: Makes each room's interpretation session (engines shared by every room,
            interpretation settings, voice consent): ``bot.app.session_factory``.
        settings: Limits, security and sound.
        host: Address to listen on.
        port: Port (0: any free port; see :attr:`port` after :meth:`start`).
        secret: Token signing secret; default: ``POLYVOX_ROOM_SECRET`` from the environment.

    Raises:
        ConfigError: listening on a non-loopback address without a secret.
    """

    def __init__(
        self,
        factory: SessionFactory,
        settings: WebRTCSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        secret: str | None = None,
    ) -> None:
        self.factory = factory
        self.engines = factory.engines
        self.settings = settings or WebRTCSettings()
        self.host = host
        self.port = port
        self.default_language = factory.params.default_language
        self._secret = secret if secret is not None else room_secret()
        loopback = is_loopback(host)
        self.require_token = check_security(host, self.settings, self._secret)
        self.rooms: dict[str, RoomSession] = {}
        #: Live counters of rooms already closed (open rooms are added at scrape time).
        self._closed_stats = SessionStats()
        self.metrics = ServerMetrics(
            rooms=lambda: len(self.rooms),
            participants=lambda: sum(len(s.participant_ids) for s in self.rooms.values()),
            live=self._live_counters,
        )
        self._create_lock = asyncio.Lock()
        self._joins: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None
        #: Set while stopping: no new participants (a page retrying gets 503 and waits).
        self._closing = False
        self.app = self._build_app()
        self._ice_loopback = loopback

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (returns once bound)."""
        self._closing = False
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
        self._closing = True
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
        return sorted(self.engines.languages.recognise)

    def hearable(self) -> list[str]:
        """Languages a participant may listen in: spoken ones, and MT targets TTS can speak."""
        return self.engines.languages.hearable()

    # -- rooms --------------------------------------------------------------------

    async def _session(self, name: str) -> RoomSession:
        async with self._create_lock:
            session = self.rooms.get(name)
            if session is not None:
                return session
            if len(self.rooms) >= self.settings.max_rooms:
                raise ClientInputError(429, f"the server has its maximum of {self.settings.max_rooms} rooms open")
            session = await self._open_session(name)
            self.rooms[name] = session
            return session

    async def _open_session(self, name: str) -> RoomSession:
        # A WebRTC room interprets into what its listeners ask for, nothing by default.
        room = Room([], default_language=self.default_language)
        transport = WebRTCRoomTransport(
            room,
            WebRTCRoomParams(foreign_gain=self.settings.foreign_gain, duck_gain=self.settings.duck_gain),
            metrics=self.metrics,
        )
        stats = SessionStats(on_partial_delay=lambda s: self.metrics.stage_latency.observe("partial_caption", s))
        session = self.factory.create(transport, name=f"room {name}", room=room, stats=stats)
        try:
            await session.start()
        except SessionError:
            raise web.HTTPServiceUnavailable(reason="the room's pipeline did not start") from None
        logger.info(f"room {name} opened")
        return RoomSession(name, transport, session)

    async def _close_session(self, room: RoomSession) -> None:
        for task in list(room.departures):
            task.cancel()
        await room.transport.close()
        # End, not cancel: EndFrame lets each stage finish the call it is in, so no
        # engine thread is still using a participant's model state when it is freed.
        await room.session.stop(drain=True)
        self._closed_stats.absorb(room.session.stats)
        logger.info(f"room {room.name} closed")

    def _live_counters(self) -> dict[str, int]:
        total = SessionStats()
        total.absorb(self._closed_stats)
        for room in self.rooms.values():
            total.absorb(room.session.stats)
        return {name: getattr(total, name) for name in SessionStats.COUNTERS}

    async def leave(self, room_name: str, participant_id: str) -> bool:
        """Disconnect a participant now; their unfinished speech is still interpreted for
        the others, then every trace of them is released. An empty room is closed.

        Returns:
            Whether the participant was in the room.
        """
        room = self.rooms.get(room_name)
        if room is None or participant_id not in room.transport.peers:
            return False
        await room.transport.remove_participant(participant_id)
        room.keys.pop(participant_id, None)
        logger.info(f"room {room_name}: participant {participant_id} left")
        room.transport.send_json({"type": "participants", **room.describe()})
        if not room.participant_ids:
            # Nobody left to hear anything: close at once (pending work is moot).
            if self.rooms.get(room_name) is room:
                del self.rooms[room_name]
            await self._close_session(room)
            return True
        task = asyncio.create_task(room.session.leave(participant_id), name=f"leave-{participant_id}")
        room.departures.add(task)
        task.add_done_callback(room.departures.discard)
        return True

    # -- HTTP ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # Hosts (DNS rebinding), CORS for webrtc.allowed_origins, and JSON errors: client
        # mistakes are 4xx, only real server faults are a (logged) 500.
        app = web.Application(
            middlewares=security_middlewares(self.settings, bind_host=self.host),  # type: ignore[arg-type]
            client_max_size=MAX_BODY_BYTES,
        )
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/languages", self._languages)
        app.router.add_get("/api/rooms/{room}", self._room_info)
        app.router.add_post("/api/rooms/{room}/join", self._join)
        app.router.add_delete("/api/rooms/{room}/participants/{participant}", self._leave)
        if self.settings.telephony:
            from transports.telephony.twilio import TwilioMediaStreams

            app.router.add_get("/telephony/twilio", TwilioMediaStreams(self).handle)
        return app

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self._closing:
            return web.json_response({"status": "stopping"}, status=503)
        return web.json_response(
            {"status": "ok", "rooms": len(self.rooms), "participants": sum(len(s.participant_ids) for s in self.rooms.values())}
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _languages(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "speaks": self.speakable(),
                "hears": self.hearable(),
                "names": {entry["code"]: entry["name"] for entry in self.engines.languages.describe()},
                "detect": bool(self.engines.asr.detects_language),
                "token_required": self.require_token,
                "features": self.features(),
            }
        )

    def features(self) -> dict[str, Any]:
        """What this server can do besides interpreting (for the page)."""
        engines = self.engines
        params = self.factory.params
        return {
            "voice_changer": engines.vc is not None,
            "voices": engines.vc.neutral_voices() if engines.vc is not None else [],
            "images": engines.image is not None and params.images is not None,
            "nonverbal": engines.events is not None and params.nonverbal is not None,
        }

    def _room_name(self, request: web.Request) -> str:
        return self.room_name(request.match_info["room"])

    @staticmethod
    def room_name(name: Any) -> str:
        """``name`` if it is a valid room name.

        Raises:
            ClientInputError: 400 otherwise.
        """
        return validate_room_name(name)

    def check_token(self, room: str, token: Any) -> str | None:
        """Whether ``token`` lets its holder into ``room`` (when this server needs tokens).

        Returns:
            The user the token was made for (``polyvox token ROOM --user NAME``): their
            identity for enrolled voices and consent; ``None`` when it names nobody.

        Raises:
            ClientInputError: 401 without a token, 400/403 with a bad one.
        """
        return check_room_token(token, room, self._secret, required=self.require_token)

    def _rate_limit(self, request: web.Request) -> None:
        client = request.remote or "?"
        now = time.monotonic()
        window = self._joins.setdefault(client, deque())
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= self.settings.joins_per_minute:
            raise ClientInputError(429, "too many join attempts; try again in a minute")
        window.append(now)
        if len(self._joins) > 10000:  # forget idle clients so the table stays small
            for key in [k for k, v in self._joins.items() if not v or now - v[-1] > 60]:
                del self._joins[key]

    async def _room_info(self, request: web.Request) -> web.Response:
        name = self._room_name(request)
        self.check_token(name, request.query.get("token") or bearer_token(request.headers.get("Authorization")))
        session = self.rooms.get(name)
        if session is None:
            return web.json_response({"room": name, "participants": [], "languages": []})
        return web.json_response(session.describe())

    async def _join(self, request: web.Request) -> web.Response:
        name = self._room_name(request)
        self._rate_limit(request)
        body = await read_json_object(request)
        # The token first: a client without one learns nothing else about the room.
        identity = self.check_token(name, body.get("token") or bearer_token(request.headers.get("Authorization")))
        sdp = validate_sdp_offer(body.get("sdp"), body.get("type"))
        speaks, hears, display = self.check_participant(body.get("speaks"), body.get("hears"), body.get("name"))
        clone_voice = body.get("clone_voice", True)
        if not isinstance(clone_voice, bool):
            raise ClientInputError(400, "'clone_voice' must be true or false")

        listen_only = body.get("listen_only", False)
        if not isinstance(listen_only, bool):
            raise ClientInputError(400, "'listen_only' must be true or false")
        listener = listen_only or self._speaks(speaks)[1]
        mode, voice, nonverbal = body.get("mode"), body.get("voice"), body.get("nonverbal")
        if mode is not None and mode not in ("interpret", "voice"):
            raise ClientInputError(400, "'mode' must be \"interpret\" or \"voice\"")
        if voice is not None and not (isinstance(voice, str) and 0 < len(voice) <= 64):
            raise ClientInputError(400, "'voice' must be a voice name (1-64 characters)")
        if nonverbal is not None and not isinstance(nonverbal, bool):
            raise ClientInputError(400, "'nonverbal' must be true or false")
        opening = name not in self.rooms

        session, pid = await self.admit(
            name, display=display, speaks=speaks, hears=hears, clone_voice=clone_voice, identity=identity,
            listener=listener,
        )
        if opening and nonverbal is not None:
            session.room.nonverbal = nonverbal and session.room.nonverbal
        if mode is not None or voice is not None:
            try:
                await session.session.set_mode(pid, mode, voice=voice)
            except PolyvoxError as exc:
                await self.abandon(session, pid)
                raise ClientInputError(400, str(exc)) from None
        answer = await self._connect(session, pid, sdp)
        # Participant ids are public (captions, listings); leaving needs this key too.
        key = session.keys[pid] = secrets.token_urlsafe(24)
        self.joined(session, pid)
        reply: dict[str, Any] = {"sdp": answer.sdp, "type": answer.type, "participant_id": pid, "key": key}
        if listener:
            reply["listen_only"] = True
            if not listen_only:
                reply["notice"] = (
                    f"Speech in {display_name(speaks)} cannot be recognised here: you can listen and read "
                    f"captions in {display_name(hears)}, but what you say will not be interpreted."
                )
        return web.json_response(reply)

    # -- admitting participants (WebRTC here, phone callers in transports.telephony) --

    def check_participant(self, speaks: Any, hears: Any, display: Any) -> tuple[str, str, str]:
        """Validate what a joining participant asked for; returns ``(speaks, hears, name)``.

        Language tags are taken as the registry writes them ("en-US" is "en").

        Raises:
            ClientInputError: 400 naming the field that is wrong.
        """
        speaks, _ = self._speaks(speaks)
        hears = validate_language(
            _language(hears), "hears", self.hearable(), default=None if is_auto(speaks) else speaks,
            unavailable="cannot interpret into {value!r}",
        )
        return speaks, hears, validate_display_name(display)

    def _speaks(self, speaks: Any) -> tuple[str, bool]:
        """The language a participant speaks, and whether they can only listen: someone
        whose language no recogniser here knows still joins, to listen (the page says so)."""
        code = _language(speaks or self.default_language)
        if is_auto(code) and self.engines.asr.detects_language:
            return AUTO, False  # identified from their speech
        if isinstance(code, str) and code in self.hearable() and code not in self.speakable():
            return code, True
        return validate_language(
            code, "speaks", self.speakable(), default=self.default_language,
            unavailable="cannot recognise speech in {value!r}",
        ), False

    async def admit(
        self,
        name: str,
        *,
        display: str,
        speaks: str,
        hears: str,
        clone_voice: bool = True,
        identity: str | None = None,
        listener: bool = False,
    ) -> tuple[RoomSession, str]:
        """Make room for a participant in room ``name`` (opening it if needed) and join
        them to its interpretation session; the caller then connects their endpoint.

        Returns:
            The room and the new participant's id.

        Raises:
            ClientInputError: 409 when the room is full, 429/503 when it cannot be opened.
        """
        if self._closing:
            raise web.HTTPServiceUnavailable(reason="the server is shutting down; try again in a moment")
        existing = self.rooms.get(name)
        if existing is not None and len(existing.participant_ids) >= self.settings.max_participants:
            self.metrics.inc("polyvox_join_rejections_total")
            raise ClientInputError(409, f"room {name} is full ({self.settings.max_participants} participants)")
        session = await self._session(name)
        if len(session.participant_ids) >= self.settings.max_participants:
            raise ClientInputError(409, f"room {name} is full ({self.settings.max_participants} participants)")
        pid = uuid.uuid4().hex
        await session.session.join(
            pid, language=speaks, name=display, hears=hears, identity=identity, clone_voice=clone_voice,
            listener=listener,
        )
        return session, pid

    def joined(self, room: RoomSession, pid: str) -> None:
        """A participant's endpoint is connected: count it and tell everyone."""
        participant = room.room.participants.get(pid)
        self.metrics.inc("polyvox_joins_total")
        if participant is not None:
            logger.info(
                f"room {room.name}: {participant.name!r} joined as {pid} "
                f"(speaks {participant.language}, hears {participant.hears or participant.language})"
            )
        room.transport.send_json({"type": "participants", **room.describe()})

    async def abandon(self, room: RoomSession, pid: str) -> None:
        """Undo :meth:`admit` for a participant whose connection failed to set up."""
        await room.transport.remove_participant(pid)
        await room.session.leave(pid, drain=False)
        if not room.participant_ids and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            await self._close_session(room)

    async def _connect(self, session: RoomSession, pid: str, sdp: str) -> RTCSessionDescription:
        servers = [RTCIceServer(urls=url) for url in self.settings.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        transport = session.transport
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
                transport.send_json({"type": "notice", "kind": "voice", "text": self._voice_notice()}, to=[pid])
                for event in transport.activity.snapshot():
                    transport.send_json(event, to=[pid])

            @channel.on("message")
            def _message(text: Any) -> None:
                self._client_message(session, pid, text)

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
            await self.abandon(session, pid)
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__  # one line for logs and clients
            raise ClientInputError(400, f"could not use the SDP offer: {detail}") from None
        watcher = asyncio.create_task(self._watch_peer(session, pid, pc), name=f"watch-{pid}")
        session.departures.add(watcher)
        watcher.add_done_callback(session.departures.discard)
        return pc.localDescription

    async def _watch_peer(self, room: RoomSession, pid: str, pc: RTCPeerConnection) -> None:
        """Release a participant whose connection never came up, or whose audio stopped.

        A join holds a place in the room from its answer on; without this an offer that
        never connects (no ICE candidates, a client gone after signalling) would hold it
        for good. A connected peer that sent audio and then went silent for
        ``idle_timeout_s`` (no RTP at all: a browser sends packets even when muted) is
        gone too; ICE consent freshness catches most, this catches the rest.
        """
        settings = self.settings
        began = time.monotonic()
        last_frames, last_change = -1, began
        while True:
            await asyncio.sleep(min(1.0, settings.connect_timeout_s / 4))
            peer = room.transport.peers.get(pid)
            if peer is None or self.rooms.get(room.name) is not room:
                return
            now = time.monotonic()
            if pc.connectionState != "connected":
                if now - began > settings.connect_timeout_s:
                    logger.info(f"room {room.name}: {pid} did not connect in {settings.connect_timeout_s:.0f} s; releasing")
                    self.metrics.inc("polyvox_joins_reaped_total")
                    await self.leave(room.name, pid)
                    return
                continue
            frames = getattr(peer, "frames_in", 0)
            if frames != last_frames:
                last_frames, last_change = frames, now
            elif frames > 0 and now - last_change > settings.idle_timeout_s:
                logger.info(f"room {room.name}: no audio from {pid} for {settings.idle_timeout_s:.0f} s; releasing")
                self.metrics.inc("polyvox_joins_reaped_total")
                await self.leave(room.name, pid)
                return

    def _voice_notice(self) -> str:
        from voices.consent import consent_notice

        return consent_notice(
            clones=bool(getattr(self.engines.tts, "clones_voices", False)),
            how_to_opt_out="switch off 'Clone my voice' (it applies at once and discards what was learnt)",
        )

    def _client_message(self, room: RoomSession, pid: str, text: Any) -> None:
        """A JSON message from a participant's page over the captions channel."""
        try:
            message = json.loads(text) if isinstance(text, str) and len(text) <= 4096 else None
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return
        if pid not in room.transport.peers:
            return
        kind = message.get("type")
        if kind == "ping":
            # The page's heartbeat: it counts the connection lost after ~3 s without a pong.
            t = message.get("t")
            finite = isinstance(t, int | float) and not isinstance(t, bool) and abs(t) < 1e18
            room.transport.send_json({"type": "pong", "t": t if finite else None}, to=[pid])
            return
        if kind == "mix":
            original = message.get("original")
            if isinstance(original, int | float) and not isinstance(original, bool) and 0 <= original <= 1:
                room.transport.set_balance(pid, float(original))
            return
        work = None
        if kind == "voice" and isinstance(message.get("clone"), bool):
            work = self._set_voice(room, pid, message["clone"])
        elif kind == "imagine":
            work = self._imagine(room, pid)
        elif kind == "mode" and message.get("mode") in ("interpret", "voice", None):
            voice = message.get("voice")
            work = self._set_mode(room, pid, message.get("mode"), voice if isinstance(voice, str) and voice else None)
        if work is not None:
            task = asyncio.create_task(work, name=f"{kind}-{pid}")
            room.departures.add(task)
            task.add_done_callback(room.departures.discard)

    async def _imagine(self, room: RoomSession, pid: str) -> None:
        if not room.session.request_image(pid):
            text = "Pictures are off on this server."
        elif self.engines.image is None:
            from pipeline.imagine import NO_IMAGE_MODEL

            text = NO_IMAGE_MODEL
        else:
            text = "Say what I should draw: your next sentence becomes a picture for everyone."
        room.transport.send_json({"type": "notice", "kind": "image", "text": text}, to=[pid])

    async def _set_mode(self, room: RoomSession, pid: str, mode: str | None, voice: str | None) -> None:
        try:
            participant = await room.session.set_mode(pid, mode, voice=voice)
        except PolyvoxError as exc:
            room.transport.send_json({"type": "notice", "kind": "mode", "text": str(exc)}, to=[pid])
            return
        if room.room.mode_of(pid) == "voice":
            voice_name = participant.changer_voice.name if participant.changer_voice is not None else "the default voice"
            text = f"Voice changer on: others hear you in the voice '{voice_name}', live, with no translation."
        else:
            text = "Voice changer off: your speech is interpreted."
        room.transport.send_json({"type": "notice", "kind": "mode", "text": text}, to=[pid])
        room.transport.send_json({"type": "participants", **room.describe()})

    async def _set_voice(self, room: RoomSession, pid: str, allowed: bool) -> None:
        await room.session.set_voice_allowed(pid, allowed)
        room.transport.send_json({"type": "participants", **room.describe()})

    async def _leave(self, request: web.Request) -> web.Response:
        name = self._room_name(request)
        pid = validate_participant_id(request.match_info["participant"])
        session = self.rooms.get(name)
        if session is None or pid not in session.transport.peers:
            raise ClientInputError(404, "no such participant in this room")
        key = validate_participant_key(request.headers.get("X-Participant-Key") or request.query.get("key"))
        if not keys_match(key, session.keys.get(pid)):
            raise ClientInputError(403, "leaving needs the participant's key from the join answer")
        await self.leave(name, pid)
        return web.json_response({"left": pid})


def check_security(host: str, settings: WebRTCSettings, secret: str | None) -> bool:
    """Whether joining needs a token; fails when the settings would expose rooms.

    Call it before loading engines so a bad setup fails in milliseconds.

    Raises:
        ConfigError: a non-loopback ``host`` without a secret, or tokens required
            without a secret.
    """
    loopback = is_loopback(host)
    if not loopback and not secret:
        raise ConfigError(
            f"server.host {host} is not a loopback address: set POLYVOX_ROOM_SECRET so joining needs a room token"
        )
    required = (bool(secret) or not loopback) if settings.require_token is None else settings.require_token
    if required and not secret:
        raise ConfigError("webrtc.require_token is on but POLYVOX_ROOM_SECRET is not set")
    return required


def _language(tag: Any) -> Any:
    """A language tag as the registry writes it ("en-US" → "en"); anything else unchanged
    (the caller's check then names it)."""
    if not isinstance(tag, str) or len(tag) > 35:
        return tag
    return normalize(tag, strict=False)


async def serve_webrtc(
    factory: SessionFactory,
    settings: WebRTCSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    ready: Callable[[RoomServer], None] | None = None,
) -> None:
    """Run the room server until cancelled (``polyvox serve``).

    Args:
        factory: ``bot.app.session_factory(settings, engines)``.
        settings: The ``webrtc`` section.
        host: ``server.host``.
        port: ``server.port``.
        ready: Called once the server listens (e.g. to print its address).

    Raises:
        ConfigError: a non-loopback ``host`` without ``POLYVOX_ROOM_SECRET``.
        OSError: the address is in use or cannot be bound.
    """
    server = RoomServer(factory, settings, host=host, port=port)
    async with server:
        if ready is not None:
            ready(server)
        await asyncio.Event().wait()
