"""A Python participant of a polyvox room, over the public signalling API.

Used by the tests and the benchmark, and an example of a non-browser client: it speaks
a recording (or silence), records what it hears with arrival times, and collects the
captions sent on its ``captions`` data channel.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
import soxr
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from transports.webrtc.mixer import FramePacer

__all__ = ["RoomClient", "SpeechTrack"]

_RATE = 48000
_FRAME = _RATE // 50


class SpeechTrack(MediaStreamTrack):
    """A microphone that plays queued recordings in real time, silence in between.

    ``say`` queues 16 kHz mono int16 audio; ``spoken`` lists ``(start, end)`` wall-clock
    (``time.monotonic``) times at which each queued recording started and finished.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[tuple[np.ndarray, int]] = []
        self._offset = 0
        self._pacer = FramePacer(_RATE, _FRAME)
        self._next_id = 0
        self.spoken: dict[int, list[float]] = {}

    def say(self, pcm16k: np.ndarray) -> int:
        """Queue a recording; returns its id (a key of ``spoken``)."""
        pcm = soxr.resample(pcm16k.astype(np.int16), 16000, _RATE).astype(np.int16)
        self._next_id += 1
        self._queue.append((pcm, self._next_id))
        return self._next_id

    @property
    def idle(self) -> bool:
        """Nothing left to say."""
        return not self._queue

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        out = np.zeros(_FRAME, dtype=np.int16)
        if self._queue:
            pcm, uid = self._queue[0]
            if self._offset == 0:
                self.spoken[uid] = [time.monotonic()]
            piece = pcm[self._offset : self._offset + _FRAME]
            out[: len(piece)] = piece
            self._offset += _FRAME
            if self._offset >= len(pcm):
                self._queue.pop(0)
                self._offset = 0
                self.spoken[uid].append(time.monotonic())
        return self._pacer.frame(out)


@dataclass
class RoomClient:
    """One participant: joins with an offer, speaks from a :class:`SpeechTrack`, listens.

    With ``listen_only`` the offer has a receive-only audio track and no microphone (as
    the page offers when there is none).

    Attributes:
        heard: 48 kHz mono int16 chunks received, with their arrival time (monotonic).
        captions: Caption messages received (``type == "caption"``), with ``received_at``.
        messages: Every data-channel message.
    """

    base_url: str
    room: str
    name: str = "client"
    speaks: str = "en"
    hears: str | None = None
    token: str | None = None
    listen_only: bool = False
    #: More fields of the join body (``mode``, ``voice``, ``clone_voice``...).
    extra: dict[str, Any] = field(default_factory=dict)
    participant_id: str = ""
    key: str = ""
    mic: SpeechTrack = field(default_factory=SpeechTrack)
    heard: list[tuple[float, np.ndarray]] = field(default_factory=list)
    captions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    pc: RTCPeerConnection | None = None
    channel: Any = None
    _reader: asyncio.Task[None] | None = None
    _channel_open: asyncio.Event = field(default_factory=asyncio.Event)

    async def join(self, within: float = 20.0) -> None:
        """Join the room; returns once connected with the captions channel open."""
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.listen_only:
            pc.addTransceiver("audio", direction="recvonly")
        else:
            pc.addTrack(self.mic)
        channel = self.channel = pc.createDataChannel("captions")

        @channel.on("open")
        def _open() -> None:
            self._channel_open.set()

        @channel.on("message")
        def _message(text: Any) -> None:
            message = json.loads(text)
            message["received_at"] = time.monotonic()
            self.messages.append(message)
            if message.get("type") == "caption":
                self.captions.append(message)

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.create_task(self._read(track))

        await pc.setLocalDescription(await pc.createOffer())
        body = {
            "sdp": pc.localDescription.sdp,
            "type": "offer",
            "name": self.name,
            "speaks": self.speaks,
            "hears": self.hears or self.speaks,
        }
        if self.token:
            body["token"] = self.token
        body.update(self.extra)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base_url}/api/rooms/{self.room}/join", json=body) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"join failed: {resp.status} {answer}")
        self.participant_id = answer["participant_id"]
        self.key = answer["key"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self._channel_open.wait(), within)

    def send(self, message: dict[str, Any]) -> None:
        """Send a JSON message on the captions channel (``{"type": "ping"}``, ...)."""
        if self.channel is None or self.channel.readyState != "open":
            raise RuntimeError("not connected")
        self.channel.send(json.dumps(message))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The messages received of one ``type`` (``image``, ``notice``...)."""
        return [m for m in self.messages if m.get("type") == kind]

    async def _read(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in resampler.resample(frame):
                self.heard.append((now, out.to_ndarray().reshape(-1).copy()))

    def audio(self, since: float = 0.0) -> np.ndarray:
        """Everything heard after ``since`` (monotonic), as one 48 kHz array."""
        parts = [pcm for t, pcm in self.heard if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def first_sound_after(self, since: float, threshold: float = 500.0) -> float | None:
        """Arrival time of the first 20 ms chunk louder than ``threshold`` (RMS) after ``since``."""
        for t, pcm in self.heard:
            if t >= since and len(pcm) and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > threshold:
                return t
        return None

    async def leave(self) -> None:
        """Leave politely (``DELETE``), then close the connection."""
        if self.participant_id:
            async with aiohttp.ClientSession() as http:
                await http.delete(
                    f"{self.base_url}/api/rooms/{self.room}/participants/{self.participant_id}",
                    headers={"X-Participant-Key": self.key},
                )
        await self.close()

    async def close(self) -> None:
        """Drop the connection without telling the server (a crash, a lost network)."""
        self.mic.stop()
        if self.pc is not None:
            await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
