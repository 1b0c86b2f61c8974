"""Phone callers over Twilio Media Streams: a WebSocket at ``/telephony/twilio``.

A Twilio number whose TwiML says ``<Connect><Stream url="wss://HOST/telephony/twilio">``
(README: "Phone callers") opens one WebSocket per call and speaks this protocol:

* Twilio → polyvox: ``connected``; ``start`` (``streamSid``, ``callSid`` and the
  ``customParameters`` of the ``<Stream>``: ``room``, ``name``, ``speaks``, ``hears``,
  ``token``); ``media`` (base64 8 kHz μ-law, 20 ms); ``mark`` (a mark we sent has been
  played); ``stop``.
* polyvox → Twilio: ``media`` (what the caller hears, 8 kHz μ-law); ``mark`` after each
  interpretation, so we learn when the caller heard it; ``clear`` when an interpretation
  is cut (Twilio drops what it buffered).

On ``start`` the caller joins the room named in the parameters exactly as a WebRTC
participant would (same checks: room name, token, languages, room size): they are one
more participant of that room's :class:`~pipeline.session.InterpretationSession`, and a
:class:`TwilioCaller` endpoint of its room transport. A room may hold only phone
callers. Audio is converted with pipecat's :class:`TwilioFrameSerializer` (μ-law ↔ PCM
with resampling); the caller hears a paced 20 ms mix, like every other listener, and
nothing is sent while that mix is silent.
"""

from __future__ import annotations

import asyncio
import json
import time
import types
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
from aiohttp import WSMsgType, web
from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame, OutputAudioRawFrame
from pipecat.serializers.twilio import TwilioFrameSerializer

from transports.webrtc.mixer import FRAME_SAMPLES, MIX_RATE, FramePacer, ListenerMixer
from transports.webrtc.transport import PIPELINE_RATE, RoomEndpoint
from transports.webrtc.validation import ClientInputError

if TYPE_CHECKING:
    from transports.webrtc.server import RoomServer, RoomSession

__all__ = ["TwilioCaller", "TwilioMediaStreams"]

#: Longest message accepted from Twilio (a 20 ms media message is ~250 bytes).
MAX_MESSAGE_BYTES = 64 * 1024
#: How long a call may take to say ``start`` before it is hung up.
START_TIMEOUT_S = 10.0


class TwilioCaller(RoomEndpoint):
    """A phone caller in a room: what they hear goes back over their Media Stream.

    Args:
        id: Their participant id.
        mixer: What they hear.
        ws: The call's WebSocket.
        stream_sid: Twilio's id of the stream (every message we send names it).
        serializer: Converts PCM to Twilio's μ-law messages.
    """

    kind = "phone"

    def __init__(
        self, id: str, mixer: ListenerMixer, ws: web.WebSocketResponse, stream_sid: str, serializer: TwilioFrameSerializer
    ) -> None:
        super().__init__(id, mixer)
        self.ws = ws
        self.stream_sid = stream_sid
        self.serializer = serializer
        self.sender: asyncio.Task[None] | None = None
        #: Marks sent and not yet played back, by name: when they were sent.
        self.marks_pending: dict[str, float] = {}
        #: Marks Twilio reported played: (name, seconds from sending to played).
        self.marks_played: list[tuple[str, float]] = []
        self.cuts = 0

    def start(self) -> None:
        """Start sending the caller's mix."""
        self.sender = asyncio.create_task(self._send_mix(), name=f"twilio-send-{self.id}")

    async def _send_mix(self) -> None:
        pacer = FramePacer()
        playing: Any = None
        while not self.ws.closed:
            await pacer.wait()
            pcm = self.mixer.pull(FRAME_SAMPLES)
            now_playing = self.mixer.playing
            if playing is not None and now_playing != playing:
                await self._send_mark(f"interpretation-{playing[0]}-{playing[1]}")
            playing = now_playing
            if not np.any(pcm):
                continue  # silence costs neither encoding nor bandwidth
            message = await self.serializer.serialize(
                OutputAudioRawFrame(audio=pcm.tobytes(), sample_rate=MIX_RATE, num_channels=1)
            )
            if message is not None:
                await self._send(message)

    async def _send_mark(self, name: str) -> None:
        self.marks_pending[name] = time.monotonic()
        await self._send(json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}))

    async def _send(self, message: str | bytes) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(message if isinstance(message, str) else message.decode())
        except (ConnectionError, RuntimeError) as exc:
            logger.debug(f"phone {self.id}: send failed: {exc}")

    def mark_played(self, name: str) -> None:
        """Twilio played everything up to the mark ``name``."""
        sent = self.marks_pending.pop(name, None)
        if sent is not None:
            self.marks_played.append((name, time.monotonic() - sent))

    def interpretation_cut(self, key: Any) -> None:
        self.cuts += 1
        asyncio.ensure_future(self._clear())

    async def _clear(self) -> None:
        message = await self.serializer.serialize(InterruptionFrame())
        if message is not None:
            await self._send(message)

    async def close(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
            try:
                await self.sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it is going away
                pass
        if not self.ws.closed:
            await self.ws.close()


class TwilioMediaStreams:
    """The ``/telephony/twilio`` WebSocket handler of a :class:`RoomServer`."""

    def __init__(self, server: RoomServer) -> None:
        self.server = server

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30)
        await ws.prepare(request)
        call = _Call(self.server, ws)
        try:
            await call.run()
        finally:
            await call.hang_up()
        return ws


class _Call:
    """One phone call's Media Stream, from ``start`` to ``stop``."""

    def __init__(self, server: RoomServer, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self.room: RoomSession | None = None
        self.caller: TwilioCaller | None = None
        self.serializer: TwilioFrameSerializer | None = None
        self.upsample = soxr.ResampleStream(PIPELINE_RATE, MIX_RATE, 1, dtype="int16")

    async def run(self) -> None:
        started = time.monotonic()
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                if message.type == WSMsgType.ERROR:
                    logger.debug(f"phone stream error: {self.ws.exception()}")
                    return
                continue
            try:
                event = json.loads(message.data)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if self.caller is None:
                if kind == "start":
                    try:
                        await self._start(event)
                    except ClientInputError as exc:
                        logger.info(f"phone call refused: {exc.message}")
                        await self.ws.close(code=1008, message=exc.message[:120].encode())
                        return
                elif kind not in ("connected",) or time.monotonic() - started > START_TIMEOUT_S:
                    await self.ws.close(code=1008, message=b"expected 'start'")
                    return
                continue
            if kind == "media":
                await self._media(message.data)
            elif kind == "mark":
                name = (event.get("mark") or {}).get("name")
                if isinstance(name, str):
                    self.caller.mark_played(name)
            elif kind == "stop":
                return

    async def _start(self, event: dict[str, Any]) -> None:
        start = event.get("start")
        if not isinstance(start, dict):
            raise ClientInputError(400, "'start' without its details")
        params = start.get("customParameters") or {}
        stream_sid = start.get("streamSid") or event.get("streamSid")
        if not isinstance(params, dict) or not isinstance(stream_sid, str) or not stream_sid:
            raise ClientInputError(400, "'start' needs streamSid and customParameters")
        media_format = start.get("mediaFormat") or {}
        if media_format and (media_format.get("encoding"), media_format.get("sampleRate")) != ("audio/x-mulaw", 8000):
            raise ClientInputError(400, f"unsupported media format {media_format!r}; expected 8 kHz μ-law")
        server = self.server
        name = server.room_name(params.get("room"))
        identity = server.check_token(name, params.get("token"))
        speaks, hears, display = server.check_participant(params.get("speaks"), params.get("hears"), params.get("name") or "caller")
        room, pid = await server.admit(name, display=display, speaks=speaks, hears=hears, identity=identity)
        serializer = TwilioFrameSerializer(
            stream_sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=PIPELINE_RATE)
        )
        # The serializer reads only the pipeline's input rate from its setup.
        await serializer.setup(types.SimpleNamespace(audio_in_sample_rate=PIPELINE_RATE))  # type: ignore[arg-type]
        caller = TwilioCaller(pid, room.transport.new_mixer(), self.ws, stream_sid, serializer)
        room.transport.add_endpoint(caller)
        caller.start()
        self.room, self.caller, self.serializer = room, caller, serializer
        server.joined(room, pid)
        logger.info(f"room {name}: phone call {str(start.get('callSid') or '?')[:40]} joined as {pid}")

    async def _media(self, data: str) -> None:
        assert self.serializer is not None and self.caller is not None and self.room is not None
        frame = await self.serializer.deserialize(data)
        if not isinstance(frame, InputAudioRawFrame) or not frame.audio:
            return
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        self.room.transport.route_direct(self.caller.id, self.upsample.resample_chunk(pcm))
        await self.room.transport.input().push_participant_audio(self.caller.id, frame.audio)

    async def hang_up(self) -> None:
        if self.room is not None and self.caller is not None:
            await self.server.leave(self.room.name, self.caller.id)
        if not self.ws.closed:
            await self.ws.close()

