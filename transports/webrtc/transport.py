"""The pipecat transport of one WebRTC room: every participant's aiortc peer connection.

``Pipeline([transport.input(), *build_cascade(engines, room), transport.output()])``
serves a room exactly as it serves a Discord channel:

* the **input** reads each participant's incoming audio track and emits
  ``UserAudioRawFrame(user_id=participant id)`` at 16 kHz mono;
* the **output** gives every listener their own outgoing track: other participants
  directly when they speak the listener's language, otherwise the interpretation into
  the listener's language with the original ducked underneath; and sends captions
  (transcript + translations) over each participant's ``captions`` data channel, and
  who is speaking and being interpreted (``transports.webrtc.activity``).

Direct speech goes from the input straight to the listeners' mixers, outside the
pipeline, so it is live rather than delayed by segmentation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
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
    VoiceChangedAudioFrame,
)
from pipeline.room import Room
from transports.webrtc.activity import ParticipantActivity
from transports.webrtc.metrics import ServerMetrics
from transports.webrtc.mixer import MIX_RATE, ListenerAudioTrack, ListenerMixer

__all__ = [
    "RoomEndpoint",
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


class RoomEndpoint:
    """How one participant is connected to a room: what the room transport needs of any
    kind of connection (a WebRTC peer, a phone call).

    Every endpoint has a :class:`ListenerMixer` holding what that participant hears; the
    connection pulls from it at its own pace. Audio the participant speaks is handed to
    :meth:`WebRTCRoomInputTransport.push_participant_audio` by the connection.

    Args:
        id: The participant id.
        mixer: What this participant hears.
    """

    #: What kind of connection this is (for listings and logs).
    kind = "endpoint"

    def __init__(self, id: str, mixer: ListenerMixer) -> None:
        self.id = id
        self.mixer = mixer

    def send_text(self, text: str) -> bool:
        """Send a JSON message (captions, participant lists); ``False`` when this
        connection has no message channel or it is not open."""
        return False

    def interpretation_cut(self, key: Any) -> None:  # noqa: B027 - optional hook
        """An interpretation was cut short: drop what of it the connection buffered."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop sending and receiving (the participant left)."""


class _Peer(RoomEndpoint):
    """A WebRTC participant: their peer connection, outgoing track and captions channel."""

    kind = "webrtc"

    def __init__(self, id: str, pc: RTCPeerConnection, mixer: ListenerMixer) -> None:
        super().__init__(id, mixer)
        self.pc = pc
        self.track_out = ListenerAudioTrack(mixer)
        self.channel: RTCDataChannel | None = None
        self.reader: asyncio.Task[None] | None = None
        self.resample_in = av.AudioResampler(format="s16", layout="mono", rate=PIPELINE_RATE)
        self.resample_mix = av.AudioResampler(format="s16", layout="mono", rate=MIX_RATE)
        self.frames_in = 0

    def send_text(self, text: str) -> bool:
        if self.channel is None or self.channel.readyState != "open":
            return False
        self.channel.send(text)
        return True

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it is going away
                pass
        self.track_out.stop()
        await self.pc.close()


class WebRTCRoomTransport(BaseTransport):
    """The participants of one room, as a pipecat transport.

    Participants connect over WebRTC (the signalling server creates the peer
    connection, then calls :meth:`add_participant` before answering, so the listener's
    outgoing track is in the answer, :meth:`attach_incoming` for the remote audio track
    and :meth:`attach_channel` for the ``captions`` data channel) or any other way that
    provides a :class:`RoomEndpoint` (:meth:`add_endpoint`: phone callers,
    ``transports.telephony``). :meth:`remove_participant` releases all of it.

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
        self.peers: dict[str, RoomEndpoint] = {}
        #: Speaking / interpreting indicators, sent to every page as they change.
        self.activity = ParticipantActivity(self.send_json)
        self._input = WebRTCRoomInputTransport(self, name=f"{self.name}#input")
        self._output = WebRTCRoomOutputTransport(self, name=f"{self.name}#output")

    def input(self) -> WebRTCRoomInputTransport:
        return self._input

    def output(self) -> WebRTCRoomOutputTransport:
        return self._output

    # -- participants -------------------------------------------------------------

    def new_mixer(self) -> ListenerMixer:
        """A listener mix with this room's levels."""
        return ListenerMixer(duck_gain=self.params.duck_gain, foreign_gain=self.params.foreign_gain)

    def add_endpoint(self, endpoint: RoomEndpoint) -> None:
        """Register a participant connected some other way than WebRTC."""
        self.peers[endpoint.id] = endpoint

    def add_participant(self, participant_id: str, pc: RTCPeerConnection) -> ListenerAudioTrack:
        """Register a WebRTC peer; returns the listener track to add to ``pc`` before answering."""
        peer = _Peer(participant_id, pc, self.new_mixer())
        self.peers[participant_id] = peer
        return peer.track_out

    def attach_incoming(self, participant_id: str, track: MediaStreamTrack) -> None:
        """Start reading a participant's microphone track."""
        peer = self.peers.get(participant_id)
        if not isinstance(peer, _Peer) or track.kind != "audio" or peer.reader is not None:
            return
        peer.reader = asyncio.create_task(self._input.read_track(peer, track), name=f"webrtc-read-{participant_id}")

    def attach_channel(self, participant_id: str, channel: RTCDataChannel) -> None:
        """Use ``channel`` for this participant's captions."""
        peer = self.peers.get(participant_id)
        if isinstance(peer, _Peer) and channel.label == "captions":
            peer.channel = channel

    async def remove_participant(self, participant_id: str) -> bool:
        """Stop everything of one participant: their connection and what others hear of them.

        Returns:
            Whether the participant was here.
        """
        peer = self.peers.pop(participant_id, None)
        if peer is None:
            return False
        for other in self.peers.values():
            other.mixer.remove_source(participant_id)
            other.mixer.remove_source(f"{participant_id}#voice")
        peer.mixer.close()
        self.activity.forget(participant_id)
        await peer.close()
        return True

    def set_balance(self, participant_id: str, original: float) -> bool:
        """Move one listener's balance between original voices (1) and interpretation (0).

        Returns:
            Whether the participant is here.

        Raises:
            ValueError: ``original`` is not from 0 to 1.
        """
        peer = self.peers.get(participant_id)
        if peer is None:
            return False
        peer.mixer.set_balance(original)
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
        if speaker is None or self.room.mode_of(speaker_id) == "voice":
            return  # a voice-changer participant is heard only in their chosen voice
        for pid, peer in self.peers.items():
            if pid == speaker_id:
                continue
            gain = 1.0 if self.hears(pid) == speaker.language else peer.mixer.foreign_gain
            peer.mixer.add_direct(speaker_id, pcm, gain)

    def listeners_of(self, speaker_id: str, language: str) -> list[RoomEndpoint]:
        """The peers (other than the speaker) who hear ``language``."""
        return [p for pid, p in self.peers.items() if pid != speaker_id and self.hears(pid) == language]

    def send_json(self, message: dict[str, Any], to: list[str] | None = None) -> None:
        """Send a JSON message over the message channel of ``to`` (default: everyone who has one)."""
        text = json.dumps(message, ensure_ascii=False)
        for pid in to if to is not None else list(self.peers):
            peer = self.peers.get(pid)
            if peer is None:
                continue
            try:
                peer.send_text(text)
            except Exception as exc:  # noqa: BLE001 - a closing channel must not stop the others
                logger.debug(f"message to {pid} failed: {exc}")


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
            await self.push_participant_audio(peer.id, pcm)

    async def push_participant_audio(self, participant_id: str, pcm: bytes) -> None:
        """What a participant said: 16 kHz mono int16, from any kind of connection."""
        participant = self._transport.room.participants.get(participant_id)
        if participant is not None and participant.listener:
            return  # a listener's microphone (if any) is not interpreted
        if pcm and participant_id in self._transport.peers:
            self._transport.activity.audio(participant_id, pcm)
            await self.push_audio_frame(
                UserAudioRawFrame(audio=pcm, sample_rate=PIPELINE_RATE, num_channels=1, user_id=participant_id)
            )


#: The frames the output handles itself (the rest take pipecat's usual path).
_ROOM_FRAMES = (
    CaptionFrame,
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    InterpretationResultFrame,
    TranslationsDoneFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
    UtteranceDroppedFrame,
    UtteranceAudioFrame,
    ImageFrame,
    NoticeFrame,
)


class WebRTCRoomOutputTransport(BaseOutputTransport):
    """Interpretation audio to each listener's mix; captions to everyone's data channel."""

    def __init__(self, transport: WebRTCRoomTransport, **kwargs: Any) -> None:
        super().__init__(TransportParams(audio_out_enabled=False), **kwargs)
        self._transport = transport
        self._resamplers: dict[tuple[int, str], soxr.ResampleStream] = {}

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
        if isinstance(frame, VoiceChangedAudioFrame) and frame.utterance is not None:
            self._voice_chunk(frame)
        elif isinstance(frame, InterpretationAudioFrame) and frame.utterance is not None:
            self._interpretation_chunk(frame)
        elif isinstance(frame, InterpretationDoneFrame):
            self._interpretation_done(frame.utterance, frame.target_language, cut=frame.error is not None)
        elif isinstance(frame, CaptionFrame):
            self._send_caption(frame)
        elif isinstance(frame, InterpretationResultFrame):
            self._record(frame)
        elif isinstance(frame, ImageFrame):
            self._send_image(frame)
        elif isinstance(frame, NoticeFrame):
            self._transport.send_json({"type": "notice", "kind": frame.kind, "text": frame.text}, to=[frame.user_id])
        # The rest (utterance audio, transcripts, translations) need nothing here: the
        # captions and results above carry what listeners see.

    # -- voice changer and pictures -----------------------------------------------

    def _voice_chunk(self, frame: VoiceChangedAudioFrame) -> None:
        """A voice-changer participant's converted speech: live, to everyone else, in
        place of their own voice (which ``route_direct`` keeps back)."""
        utterance = frame.utterance
        assert utterance is not None
        speaker = utterance.user_id
        key = (-1, f"voice:{speaker}:{frame.sample_rate}")
        stream = self._resamplers.get(key)
        if stream is None:
            stream = self._resamplers[key] = soxr.ResampleStream(frame.sample_rate, MIX_RATE, 1, dtype="int16")
        pcm = stream.resample_chunk(np.frombuffer(frame.audio, dtype=np.int16))
        utterance.mark("first_audio_out")
        for pid, peer in self._transport.peers.items():
            if pid != speaker:
                peer.mixer.add_direct(f"{speaker}#voice", pcm, 1.0)

    def _send_image(self, frame: ImageFrame) -> None:
        import base64

        participant = self._transport.room.participants.get(frame.user_id)
        self._transport.send_json(
            {
                "type": "image",
                "participant_id": frame.user_id,
                "name": participant.name if participant else frame.user_id,
                "language": frame.language,
                "caption": frame.caption,
                "prompt": frame.prompt,
                "png_base64": base64.b64encode(frame.png).decode("ascii"),
            }
        )

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

    def _interpretation_done(self, utterance: Utterance, language: str, *, cut: bool = False) -> None:
        key = (utterance.id, language)
        stream = self._resamplers.pop(key, None)
        if stream is not None and not cut:
            tail = stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._to_listeners(utterance, language, tail)
        for peer in self._transport.listeners_of(utterance.user_id, language):
            if cut:
                # Half a sentence is worse than none: what was not heard yet is dropped.
                if peer.mixer.cut_interpretation(key):
                    peer.interpretation_cut(key)
            else:
                peer.mixer.finish_interpretation(key)

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

        activity = self._transport.activity
        for peer in self._transport.listeners_of(utterance.user_id, language):

            def heard(listener: str = peer.id) -> None:
                started()
                activity.interpretation_started(listener, key, utterance.user_id)

            def ended(listener: str = peer.id) -> None:
                activity.interpretation_ended(listener, key)

            peer.mixer.add_interpretation(key, pcm, on_start=heard, on_end=ended)

    def _record(self, frame: InterpretationResultFrame) -> None:
        metrics = self._transport.metrics
        if metrics is None:
            return
        result = frame.result
        if result.utterance.kind == "voice":
            return  # a voice-changer stretch is not an interpretation: keep the figures apart
        if result.dropped is not None:
            if result.transcript or result.dropped[0] != "asr":
                metrics.inc("polyvox_utterances_dropped_total")
            return
        metrics.inc("polyvox_utterances_total")
        for stage, seconds in result.utterance.latencies().items():
            if stage != "first_audio_out":  # observed when a listener's track first played it
                metrics.stage_latency.observe(stage, seconds)

    # -- captions -----------------------------------------------------------------

    def _send_caption(self, caption: CaptionFrame) -> None:
        utterance = caption.utterance
        participant = self._transport.room.participants.get(utterance.user_id)
        self._transport.send_json(
            {
                "type": "caption",
                "utterance_id": utterance.id,
                "participant_id": utterance.user_id,
                "name": participant.name if participant else utterance.user_id,
                "language": utterance.language,
                "text": caption.text,
                "translations": dict(caption.translations),
                "final": caption.final,
                "sent_at": time.time(),
            }
        )
