"""The pipecat transport of one WebRTC room: every participant's aiortc peer connection.

``Pipeline([transport.input(), *build_cascade(engines, room), transport.output()])``
serves a room exactly as it serves a Discord channel:

* the **input** reads each participant's incoming audio track and emits
  ``UserAudioRawFrame(user_id=participant id)`` at 16 kHz mono;
* the **output** gives every listener their own outgoing track: other participants
  directly when they speak the listener's language, otherwise the interpretation into
  the listener's language with the original ducked underneath; and sends captions
  (transcript + translations) over each participant's ``captions`` data channel.

Direct speech goes from the input straight to the listeners' mixers, outside the
pipeline, so it is live rather than delayed by segmentation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import soxr
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from loguru import logger
from pipecat.frames.frames import Frame, StartFrame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipeline.frames import (
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.room import Room
from transports.webrtc.metrics import ServerMetrics
from transports.webrtc.mixer import MIX_RATE, ListenerAudioTrack, ListenerMixer

__all__ = [
    "WebRTCRoomInputTransport",
    "WebRTCRoomOutputTransport",
    "WebRTCRoomParams",
    "WebRTCRoomTransport",
]

#: The cascade's input rate.
PIPELINE_RATE = 16000


@dataclass
class WebRTCRoomParams:
    """How a room sounds.

    Attributes:
        foreign_gain: Gain of a speaker's original voice for listeners who hear
            another language (their interpretation follows); 0 mutes it.
        duck_gain: Gain of any direct speech while an interpretation plays.
    """

    foreign_gain: float = 0.3
    duck_gain: float = 0.15


@dataclass
class _Peer:
    """Everything the transport holds for one participant."""

    id: str
    pc: RTCPeerConnection
    mixer: ListenerMixer
    track_out: ListenerAudioTrack
    channel: RTCDataChannel | None = None
    reader: asyncio.Task[None] | None = None
    resample_in: av.AudioResampler = field(
        default_factory=lambda: av.AudioResampler(format="s16", layout="mono", rate=PIPELINE_RATE)
    )
    resample_mix: av.AudioResampler = field(
        default_factory=lambda: av.AudioResampler(format="s16", layout="mono", rate=MIX_RATE)
    )
    frames_in: int = 0


class WebRTCRoomTransport(BaseTransport):
    """The participants' peer connections of one room, as a pipecat transport.

    The signalling server creates the peer connection, then calls
    :meth:`add_participant` (before answering, so the listener's outgoing track is in
    the answer), :meth:`attach_incoming` for the remote audio track and
    :meth:`attach_channel` for the ``captions`` data channel; :meth:`remove_participant`
    releases all of it.

    Args:
        room: The room's participants (languages, names, voices).
        params: Mixing levels.
        metrics: Where per-stage latencies are recorded, if anywhere.
    """

    def __init__(
        self,
        room: Room,
        params: WebRTCRoomParams | None = None,
        *,
        metrics: ServerMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.room = room
        self.params = params or WebRTCRoomParams()
        self.metrics = metrics
        self.peers: dict[str, _Peer] = {}
        self._input = WebRTCRoomInputTransport(self, name=f"{self.name}#input")
        self._output = WebRTCRoomOutputTransport(self, name=f"{self.name}#output")

    def input(self) -> WebRTCRoomInputTransport:
        return self._input

    def output(self) -> WebRTCRoomOutputTransport:
        return self._output

    # -- participants -------------------------------------------------------------

    def add_participant(self, participant_id: str, pc: RTCPeerConnection) -> ListenerAudioTrack:
        """Register a peer; returns the listener track to add to ``pc`` before answering."""
        mixer = ListenerMixer(duck_gain=self.params.duck_gain)
        peer = _Peer(participant_id, pc, mixer, ListenerAudioTrack(mixer))
        self.peers[participant_id] = peer
        return peer.track_out

    def attach_incoming(self, participant_id: str, track: MediaStreamTrack) -> None:
        """Start reading a participant's microphone track."""
        peer = self.peers.get(participant_id)
        if peer is None or track.kind != "audio" or peer.reader is not None:
            return
        peer.reader = asyncio.create_task(self._input.read_track(peer, track), name=f"webrtc-read-{participant_id}")

    def attach_channel(self, participant_id: str, channel: RTCDataChannel) -> None:
        """Use ``channel`` for this participant's captions."""
        peer = self.peers.get(participant_id)
        if peer is not None and channel.label == "captions":
            peer.channel = channel

    async def remove_participant(self, participant_id: str) -> bool:
        """Stop everything of one participant: reader, outgoing track, peer connection.

        Returns:
            Whether the participant was here.
        """
        peer = self.peers.pop(participant_id, None)
        if peer is None:
            return False
        if peer.reader is not None:
            peer.reader.cancel()
            try:
                await peer.reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it is going away
                pass
        peer.track_out.stop()
        for other in self.peers.values():
            other.mixer.remove_source(participant_id)
        await peer.pc.close()
        return True

    async def close(self) -> None:
        """Remove every participant."""
        for pid in list(self.peers):
            await self.remove_participant(pid)

    # -- routing ------------------------------------------------------------------

    def hears(self, participant_id: str) -> str:
        """The language ``participant_id`` listens in (their own when they chose none)."""
        participant = self.room.participants.get(participant_id)
        if participant is None:
            return ""
        return participant.hears or participant.language

    def route_direct(self, speaker_id: str, pcm: np.ndarray) -> None:
        """Live audio (48 kHz mono) of a speaker to every other listener's mix."""
        speaker = self.room.participants.get(speaker_id)
        if speaker is None:
            return
        for pid, peer in self.peers.items():
            if pid == speaker_id:
                continue
            gain = 1.0 if self.hears(pid) == speaker.language else self.params.foreign_gain
            peer.mixer.add_direct(speaker_id, pcm, gain)

    def listeners_of(self, speaker_id: str, language: str) -> list[_Peer]:
        """The peers (other than the speaker) who hear ``language``."""
        return [p for pid, p in self.peers.items() if pid != speaker_id and self.hears(pid) == language]

    def send_json(self, message: dict[str, Any], to: list[str] | None = None) -> None:
        """Send a JSON message over the captions channel of ``to`` (default: everyone)."""
        text = json.dumps(message, ensure_ascii=False)
        for pid in to if to is not None else list(self.peers):
            peer = self.peers.get(pid)
            if peer is None or peer.channel is None or peer.channel.readyState != "open":
                continue
            try:
                peer.channel.send(text)
            except Exception as exc:  # noqa: BLE001 - a closing channel must not stop the others
                logger.debug(f"captions to {pid} failed: {exc}")


class WebRTCRoomInputTransport(BaseInputTransport):
    """Participants' microphones → ``UserAudioRawFrame(user_id=...)`` at 16 kHz mono."""

    def __init__(self, transport: WebRTCRoomTransport, **kwargs: Any) -> None:
        super().__init__(
            TransportParams(audio_in_enabled=True, audio_in_sample_rate=PIPELINE_RATE), **kwargs
        )
        self._transport = transport

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def read_track(self, peer: _Peer, track: MediaStreamTrack) -> None:
        """Read one participant's track until it ends or they leave."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                logger.debug(f"audio track of {peer.id} ended")
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            peer.frames_in += 1
            for mixed in peer.resample_mix.resample(frame):
                self._transport.route_direct(peer.id, mixed.to_ndarray().reshape(-1))
            pcm = b"".join(bytes(f.to_ndarray().reshape(-1).tobytes()) for f in peer.resample_in.resample(frame))
            if pcm:
                await self.push_audio_frame(
                    UserAudioRawFrame(audio=pcm, sample_rate=PIPELINE_RATE, num_channels=1, user_id=peer.id)
                )


#: The frames the output handles itself (the rest take pipecat's usual path).
_ROOM_FRAMES = (
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
    UtteranceDroppedFrame,
    UtteranceAudioFrame,
)


class WebRTCRoomOutputTransport(BaseOutputTransport):
    """Interpretation audio to each listener's mix; captions to everyone's data channel."""

    def __init__(self, transport: WebRTCRoomTransport, **kwargs: Any) -> None:
        super().__init__(TransportParams(audio_out_enabled=False), **kwargs)
        self._transport = transport
        self._resamplers: dict[tuple[int, str], soxr.ResampleStream] = {}
        self._captions: dict[int, _PendingCaption] = {}

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, _ROOM_FRAMES):
            # These frames end here: skip BaseOutputTransport's media sender (it would
            # play TTS audio on one default stream) but keep FrameProcessor's bookkeeping.
            await FrameProcessor.process_frame(self, frame, direction)
            await self._route(frame)
            return
        await super().process_frame(frame, direction)

    async def _route(self, frame: Frame) -> None:
        if isinstance(frame, InterpretationAudioFrame) and frame.utterance is not None:
            self._interpretation_chunk(frame)
        elif isinstance(frame, InterpretationDoneFrame):
            self._interpretation_done(frame.utterance, frame.target_language)
        elif isinstance(frame, UtteranceTranscriptionFrame) and frame.utterance is not None:
            self._caption_transcript(frame.utterance, frame.text)
        elif isinstance(frame, UtteranceTranslationFrame) and frame.utterance is not None:
            self._caption_translation(frame.utterance, frame.target_language, frame.text)
        elif isinstance(frame, UtteranceDroppedFrame):
            self._caption_dropped(frame.utterance)
        # UtteranceAudioFrame: nothing to play (voice capture, when it exists, sits
        # upstream of here and reads it).

    # -- interpretation audio -----------------------------------------------------

    def _interpretation_chunk(self, frame: InterpretationAudioFrame) -> None:
        utterance = frame.utterance
        assert utterance is not None
        key = (utterance.id, frame.target_language)
        stream = self._resamplers.get(key)
        if stream is None:
            stream = self._resamplers[key] = soxr.ResampleStream(frame.sample_rate, MIX_RATE, 1, dtype="int16")
        pcm = stream.resample_chunk(np.frombuffer(frame.audio, dtype=np.int16))
        self._to_listeners(utterance, frame.target_language, pcm)

    def _interpretation_done(self, utterance: Utterance, language: str) -> None:
        key = (utterance.id, language)
        stream = self._resamplers.pop(key, None)
        if stream is not None:
            tail = stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._to_listeners(utterance, language, tail)
        for peer in self._transport.listeners_of(utterance.user_id, language):
            peer.mixer.finish_interpretation(key)
        self._record_latency(utterance)

    def _to_listeners(self, utterance: Utterance, language: str, pcm: np.ndarray) -> None:
        key = (utterance.id, language)

        def started() -> None:
            first = "first_audio_out" not in utterance.marks
            utterance.mark("first_audio_out")
            metrics = self._transport.metrics
            if first and metrics is not None and "speech_end" in utterance.marks:
                metrics.stage_latency.observe(
                    "first_audio_out", utterance.marks["first_audio_out"] - utterance.marks["speech_end"]
                )

        for peer in self._transport.listeners_of(utterance.user_id, language):
            peer.mixer.add_interpretation(key, pcm, on_start=started)

    def _record_latency(self, utterance: Utterance) -> None:
        metrics = self._transport.metrics
        if metrics is None:
            return
        for stage, seconds in utterance.latencies().items():
            metrics.stage_latency.observe(stage, seconds)

    # -- captions -----------------------------------------------------------------

    def _caption_transcript(self, utterance: Utterance, text: str) -> None:
        metrics = self._transport.metrics
        if metrics is not None:
            metrics.inc("polyvox_utterances_total")
        expected = set(self._transport.room.targets_for(utterance.user_id))
        pending = _PendingCaption(utterance, text, expected)
        self._send_caption(pending, final=not expected)
        if expected:
            self._captions[utterance.id] = pending

    def _caption_translation(self, utterance: Utterance, language: str, text: str) -> None:
        pending = self._captions.get(utterance.id)
        if pending is None:
            return
        pending.translations[language] = text
        if pending.expected <= set(pending.translations):
            del self._captions[utterance.id]
            self._send_caption(pending, final=True)

    def _caption_dropped(self, utterance: Utterance) -> None:
        metrics = self._transport.metrics
        if metrics is not None:
            metrics.inc("polyvox_utterances_dropped_total")
        pending = self._captions.pop(utterance.id, None)
        if pending is not None:
            self._send_caption(pending, final=True)

    def _send_caption(self, pending: _PendingCaption, *, final: bool) -> None:
        utterance = pending.utterance
        participant = self._transport.room.participants.get(utterance.user_id)
        self._transport.send_json(
            {
                "type": "caption",
                "utterance_id": utterance.id,
                "participant_id": utterance.user_id,
                "name": participant.name if participant else utterance.user_id,
                "language": utterance.language,
                "text": pending.text,
                "translations": dict(pending.translations),
                "final": final,
                "sent_at": time.time(),
            }
        )


@dataclass
class _PendingCaption:
    utterance: Utterance
    text: str
    expected: set[str]
    translations: dict[str, str] = field(default_factory=dict)
