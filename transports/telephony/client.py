"""A local client of the Twilio Media Streams protocol: a phone call without a phone.

It does what Twilio does for one call — ``connected``, ``start`` with custom
parameters, 20 ms ``media`` messages of 8 kHz μ-law at real-time pace, ``mark`` echoed
once the audio before it has "played", ``stop`` — against ``/telephony/twilio`` on
loopback, and keeps what the caller heard. Tests and benchmarks use it; no account or
network is needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from typing import Any

import aiohttp
import numpy as np
import soxr
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw, ulaw_to_pcm

__all__ = ["PhoneClient"]

#: Twilio's rate and frame: 8 kHz μ-law, 20 ms (160 bytes) per media message.
PHONE_RATE = 8000
FRAME_BYTES = 160


class PhoneClient:
    """One phone call into a polyvox room.

    Args:
        url: The server's base URL (``http://127.0.0.1:PORT``).
        room: Room to join.
        name: Display name.
        speaks: Language the caller speaks.
        hears: Language the caller hears.
        token: Room token, when the server needs one.

    Attributes:
        heard: ``(arrival time, 16 kHz int16 chunk)`` of every media message received.
        marks: Names of the marks received (echoed back as played).
        clears: How many ``clear`` messages arrived.
        closed_with: The close code and reason, once the server hung up.
    """

    def __init__(
        self, url: str, room: str, *, name: str = "caller", speaks: str = "en", hears: str | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/telephony/twilio"
        self.params: dict[str, str] = {"room": room, "name": name, "speaks": speaks, "hears": hears or speaks}
        if token:
            self.params["token"] = token
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = "CA" + uuid.uuid4().hex
        self.heard: list[tuple[float, np.ndarray]] = []
        self.marks: list[str] = []
        self.clears = 0
        self.closed_with: tuple[int | None, str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sequence = 0
        self._chunk = 0
        self._down = create_stream_resampler()
        self._decode = create_stream_resampler()
        self._up = soxr.ResampleStream(PHONE_RATE, 16000, 1, dtype="int16")

    async def call(self) -> None:
        """Open the stream and say ``connected`` and ``start``, as Twilio does on answer."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url)
        self._reader = asyncio.create_task(self._read(), name=f"phone-{self.stream_sid[:8]}")
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": PHONE_RATE, "channels": 1},
                },
            }
        )

    async def say(self, pcm16k: np.ndarray, *, pace: float = 1.0) -> None:
        """Speak 16 kHz mono int16 audio into the call at ``pace`` × real time."""
        ulaw = await pcm_to_ulaw(np.asarray(pcm16k, dtype=np.int16).tobytes(), 16000, PHONE_RATE, self._down)
        begin = time.monotonic()
        for index, offset in enumerate(range(0, len(ulaw), FRAME_BYTES)):
            self._chunk += 1
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(self._chunk * 20),
                        "payload": base64.b64encode(ulaw[offset : offset + FRAME_BYTES]).decode(),
                    },
                }
            )
            due = begin + (index + 1) * 0.02 / pace
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def audio(self, since: float = 0.0) -> np.ndarray:
        """Everything heard since ``since`` (monotonic), 16 kHz int16."""
        parts = [pcm for t, pcm in self.heard if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def hang_up(self) -> None:
        """Say ``stop`` and close, as Twilio does when the caller hangs up."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send({"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}})
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._session is not None:
            await self._session.close()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        self._sequence += 1
        message = {"sequenceNumber": str(self._sequence), **message}
        await self._ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        assert self._ws is not None
        while True:
            message = await self._ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                self.closed_with = (self._ws.close_code, str(message.extra or ""))
                return
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            kind = event.get("event")
            if kind == "media":
                ulaw = base64.b64decode(event["media"]["payload"])
                pcm8k = np.frombuffer(await ulaw_to_pcm(ulaw, PHONE_RATE, PHONE_RATE, self._decode), dtype=np.int16)
                self.heard.append((time.monotonic(), self._up.resample_chunk(pcm8k)))
            elif kind == "mark":
                # Everything before the mark was "played" on arrival: echo it as Twilio would.
                name = event["mark"]["name"]
                self.marks.append(name)
                await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            elif kind == "clear":
                self.clears += 1
