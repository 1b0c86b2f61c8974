"""Per-speaker audio from Discord's voice UDP stream: decrypt, reorder, decode, resample.

Discord sends every participant's voice as its own RTP stream (one SSRC each) on the
bot's single UDP socket. :class:`VoiceReceiver` turns those datagrams into 16 kHz mono
int16 audio per user::

    datagram ─ RTCP / not RTP? skip
             ─ transport decrypt (aead_*_rtpsize)             TransportDecryptor
             ─ SSRC → user id (SPEAKING / client-connect)     map_ssrc(); unmapped held ~1 s
             ─ DAVE end-to-end decrypt (davey), passthrough while DAVE is not active
             ─ jitter buffer: reorder by sequence, drop duplicates and late packets
             ─ Opus decode 48 kHz stereo, PLC / in-band FEC for lost packets
             ─ downmix, resample to ``sample_rate``            on_audio(user_id, pcm)

The jitter buffer holds a packet only while an earlier sequence number is missing: an
in-order packet is decoded at once, and a gap is waited for at most ``jitter_ms``
(counted from the arrival of the first packet behind it) before it is concealed. So
audio comes out with no added delay on a clean network, and reordering up to
``jitter_ms`` deep costs at most that much. Only short losses are concealed (up to
``max_fill_frames``, 3 by default: 60 ms of PLC / in-band FEC); a longer gap is a
discontinuity, skipped without fill, and a jump of more than a second of sequence
numbers resyncs the stream at once. So whatever sequence numbers a sender uses, the
audio that comes out is never much longer than the audio that came in. Only an SSRC's very first packets wait
``jitter_ms`` (or until ``jitter_ms / 20 + 1`` packets are in), so a stream whose
first packets arrive out of order still starts at its first one.

Discord clients send nothing while a user is silent, and the RTP sequence runs on
without a gap across the pause. Downstream segmentation needs silence to end an
utterance, so :meth:`VoiceReceiver.flush` (call it on a timer, e.g. every 20 ms) also
emits up to ``tail_silence_ms`` of silence for a user who went quiet, in real time.

Threading: :meth:`feed` is called from discord.py's socket-reader thread, the mapping
methods from the event loop and :meth:`flush` from a timer; one re-entrant lock keeps
them consistent. ``on_audio`` runs in the calling thread with that lock held: keep it
short (e.g. ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger

from transports.discord.crypto import (
    OPUS_SILENCE_FRAME,
    DecryptError,
    TransportDecryptor,
    is_dave_frame,
)
from transports.discord.rtp import OPUS_PAYLOAD_TYPE, RtpPacket, is_rtcp

__all__ = ["STAT_KEYS", "VoiceReceiver"]

_OPUS_RATE = 48000
_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, what every Discord client sends
_SEQ_MOD = 1 << 16

#: Lost packets concealed with Opus PLC before falling back to plain silence (PLC
#: fades out anyway; beyond ~100 ms it only smears).
_PLC_FRAMES = 5
#: Default longest gap filled (60 ms); a longer one is a discontinuity: no fill. A
#: sender that skips sequence numbers must not make audio out of nothing: with fills
#: of up to 50 frames, a stream jumping 50 at a time came out ~37× longer than it was.
_DEFAULT_MAX_FILL_FRAMES = 3
#: Most frames ``max_fill_frames`` may be set to (1 s).
_MAX_FILL_LIMIT = 50
#: A packet this far ahead of the expected sequence (over 1 s) resyncs the stream at
#: once: no reordering is that deep, so waiting for the gap would only delay audio.
_RESYNC_AHEAD = 50
#: A packet this far behind the expected sequence is a restarted stream, not a late one.
_RESTART_BEHIND = 200
#: Packets a single stream's jitter buffer may hold before it is forced to release.
_MAX_BUFFERED = 100
#: SSRCs whose audio is held while waiting for their SPEAKING event.
_MAX_PENDING_SSRCS = 16

#: Every counter in :attr:`VoiceReceiver.stats`.
STAT_KEYS = (
    "datagrams",  # everything fed
    "rtcp",  # RTCP reports, skipped
    "not_rtp",  # not RTP v2 (e.g. IP-discovery replies), skipped
    "no_key",  # arrived before the session key
    "decrypt_errors",  # failed transport authentication / malformed
    "not_audio",  # RTP with another payload type than Opus
    "video_ignored",  # a known video SSRC
    "unmapped_held",  # held while their SSRC had no user yet
    "unmapped_dropped",  # held too long without a SPEAKING event, dropped
    "dave_passthrough",  # DAVE session present but not active: frame used as is
    "dave_errors",  # DAVE frame that could not be decrypted, dropped
    "duplicates",  # same sequence number seen twice
    "late",  # behind the play-out point: a straggler whose gap was concealed, or a copy of a played packet
    "restarts",  # sequence jumped: stream restarted
    "decode_errors",  # Opus could not decode the frame
    "packets",  # decoded into audio
    "concealed",  # lost packets filled by PLC / FEC / silence
    "discontinuities",  # gaps too long to fill
    "tail_silence_frames",  # 20 ms silence frames emitted after a user went quiet
    "errors",  # unexpected exceptions caught in feed/flush
    "callback_errors",  # exceptions raised by on_audio
)


def _seq_ahead(seq: int, ref: int) -> int:
    """Signed distance from ``ref`` to ``seq`` in 16-bit sequence space."""
    d = (seq - ref) % _SEQ_MOD
    return d - _SEQ_MOD if d >= _SEQ_MOD // 2 else d


class _Downsampler:
    """48 kHz interleaved stereo int16 → mono int16 at ``rate``, continuous across calls.

    Integer ratios (16, 24, 8 kHz ...) use a windowed-sinc FIR decimator so every
    20 ms packet yields exactly 20 ms of output (the output timeline stays exact);
    other rates go through a streaming soxr resampler.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._factor = _OPUS_RATE // rate if _OPUS_RATE % rate == 0 else 0
        self._stream: Any = None
        if self._factor > 1:
            taps = 40 * self._factor + 1
            n = np.arange(taps) - (taps - 1) / 2
            cutoff = 0.45 / self._factor  # of the input rate: 0.9 × the output Nyquist
            h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(taps)
            self._taps = (h / h.sum()).astype(np.float32)
            self._history = np.zeros(taps - 1, dtype=np.float32)
            self._phase = 0
        elif self._factor == 0:
            import soxr

            self._stream = soxr.ResampleStream(_OPUS_RATE, rate, 1, dtype="float32", quality="HQ")

    def __call__(self, stereo: bytes) -> bytes:
        samples = np.frombuffer(stereo, dtype=np.int16)
        mono = samples.reshape(-1, 2).astype(np.float32).mean(axis=1)
        if self._factor == 1:
            out = mono
        elif self._factor > 1:
            padded = np.concatenate([self._history, mono])
            filtered = np.convolve(padded, self._taps, mode="valid")
            out = filtered[self._phase :: self._factor]
            self._phase = (self._phase - len(mono)) % self._factor
            self._history = padded[len(padded) - len(self._history) :]
        else:
            out = self._stream.resample_chunk(mono)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes()


@dataclass
class _Stream:
    """The decode state of one mapped SSRC."""

    user_id: int
    decoder: Any
    downsample: _Downsampler
    buffer: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    next_seq: int | None = None
    primed: bool = False  # the stream's first packet has been chosen
    last_arrival: float = 0.0
    started: bool = False
    tail_frames: int = 0  # silence frames emitted since the last real packet
    silence_credit: int = 0  # of those, not yet matched by a sequence gap


class VoiceReceiver:
    """Decodes Discord voice datagrams into per-user PCM.

    Args:
        on_audio: Called with ``(user_id, pcm)`` for each decoded stretch:
            ``pcm`` is mono int16 little-endian at ``sample_rate`` (20 ms per packet).
        mode: The transport encryption mode (see ``crypto.SUPPORTED_MODES``);
            ``None`` until the session description arrives (see :meth:`set_transport`).
        secret_key: The 32-byte session key, or ``None`` until known.
        dave_session: A ``davey.DaveSession``, a zero-argument callable returning the
            current one (discord.py creates and replaces it), or ``None`` (no DAVE).
        sample_rate: Output sample rate in Hz.
        jitter_ms: How long a gap in the sequence is waited for before it is concealed.
        max_fill_frames: Longest gap (in 20 ms packets) concealed with PLC / FEC;
            a longer gap is skipped (counted in ``discontinuities``).
        hold_unmapped_ms: How long audio of an SSRC without a user is kept, waiting for
            its SPEAKING event; older audio is dropped (counted in ``unmapped_dropped``).
        tail_silence_ms: Silence emitted by :meth:`flush` after a user goes quiet
            (0 turns it off).
        clock: Monotonic time source in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        on_audio: Callable[[int, bytes], None],
        *,
        mode: str | None = None,
        secret_key: bytes | None = None,
        dave_session: Any = None,
        sample_rate: int = 16000,
        jitter_ms: int = 60,
        max_fill_frames: int = _DEFAULT_MAX_FILL_FRAMES,
        hold_unmapped_ms: int = 1000,
        tail_silence_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sample_rate <= 0 or sample_rate > _OPUS_RATE:
            raise ValueError(f"sample_rate must be in 1..48000, got {sample_rate}")
        if jitter_ms < 0 or hold_unmapped_ms < 0 or tail_silence_ms < 0:
            raise ValueError("jitter_ms, hold_unmapped_ms and tail_silence_ms must not be negative")
        if not 0 <= max_fill_frames <= _MAX_FILL_LIMIT:
            raise ValueError(f"max_fill_frames must be in 0..{_MAX_FILL_LIMIT}, got {max_fill_frames}")
        from discord import opus

        if not opus.is_loaded() and not opus._load_default():
            raise ImportError("libopus is needed for Discord voice (apt install libopus0)")
        self._opus = opus
        self._on_audio = on_audio
        self.sample_rate = sample_rate
        self.jitter = jitter_ms / 1000
        self.max_fill_frames = max_fill_frames
        self.hold_unmapped = hold_unmapped_ms / 1000
        self.tail_silence_frames = tail_silence_ms // 20
        self._prime_packets = jitter_ms // 20
        self._clock = clock
        self._lock = threading.RLock()
        self._decryptor: TransportDecryptor | None = None
        self._dave = dave_session
        self._ssrc_user: dict[int, int] = {}
        self._video_ssrcs: set[int] = set()
        self._streams: dict[int, _Stream] = {}
        self._pending: dict[int, deque[tuple[float, RtpPacket]]] = {}
        self._silence = bytes(2 * (sample_rate * 20 // 1000))
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        if mode is not None and secret_key is not None:
            self.set_transport(mode, secret_key)

    # ------------------------------------------------------------------ control

    def set_transport(self, mode: str, secret_key: bytes) -> None:
        """Use a new session's encryption mode and key (each SESSION_DESCRIPTION).

        Raises:
            ValueError: Unsupported mode or malformed key.
        """
        decryptor = TransportDecryptor(mode, bytes(secret_key))
        with self._lock:
            self._decryptor = decryptor

    def set_dave_session(self, dave_session: Any) -> None:
        """Replace the DAVE session (or provider callable, or ``None``)."""
        with self._lock:
            self._dave = dave_session

    def map_ssrc(self, ssrc: int, user_id: int, *, video_ssrc: int | None = None) -> None:
        """Attribute audio SSRC ``ssrc`` to ``user_id``; ignore ``video_ssrc``'s packets.

        Audio of ``ssrc`` held while it was unmapped is decoded now. Mapping an SSRC to
        another user starts its stream afresh.
        """
        with self._lock:
            try:
                if video_ssrc:
                    self._video_ssrcs.add(int(video_ssrc))
                if not ssrc:
                    return  # client-connect without audio (video only)
                ssrc, user_id = int(ssrc), int(user_id)
                if self._ssrc_user.get(ssrc) != user_id:
                    self._streams.pop(ssrc, None)
                    self._ssrc_user[ssrc] = user_id
                held = self._pending.pop(ssrc, None)
                if held:
                    now = self._clock()
                    self._prune_held(held, now)
                    for _, packet in held:
                        self._accept(packet, now)
            except Exception:
                self.stats["errors"] += 1
                logger.exception("Discord voice receiver: map_ssrc failed")

    def remove_user(self, user_id: int) -> None:
        """Forget ``user_id`` (left the channel): its audio stops, buffered audio is dropped."""
        with self._lock:
            user_id = int(user_id)
            for ssrc in [s for s, u in self._ssrc_user.items() if u == user_id]:
                del self._ssrc_user[ssrc]
                self._streams.pop(ssrc, None)
                self._pending.pop(ssrc, None)

    def users(self) -> dict[int, int]:
        """The current SSRC → user id map (a copy)."""
        with self._lock:
            return dict(self._ssrc_user)

    # ------------------------------------------------------------------ data path

    def feed(self, datagram: bytes) -> None:
        """Take one datagram from the voice socket. Never raises; problems are counted."""
        with self._lock:
            self.stats["datagrams"] += 1
            try:
                self._feed(datagram, self._clock())
            except Exception:
                self.stats["errors"] += 1
                logger.opt(exception=True).debug("Discord voice receiver: unexpected error in feed")

    def flush(self, now: float | None = None) -> None:
        """Release what waited past the jitter delay, emit tail silence, drop stale held audio.

        Args:
            now: The current time on the receiver's clock (default: read it).
        """
        with self._lock:
            try:
                now = self._clock() if now is None else now
                for stream in list(self._streams.values()):
                    self._release(stream, now)
                    self._emit_tail_silence(stream, now)
                for ssrc, held in list(self._pending.items()):
                    self._prune_held(held, now)
                    if not held:
                        del self._pending[ssrc]
            except Exception:
                self.stats["errors"] += 1
                logger.opt(exception=True).debug("Discord voice receiver: unexpected error in flush")

    def _feed(self, datagram: bytes, now: float) -> None:
        if is_rtcp(datagram):
            self.stats["rtcp"] += 1
            return
        if len(datagram) < 12 or datagram[0] >> 6 != 2:
            self.stats["not_rtp"] += 1
            return
        if self._decryptor is None:
            self.stats["no_key"] += 1
            return
        try:
            packet = self._decryptor.decrypt(datagram)
        except DecryptError:
            self.stats["decrypt_errors"] += 1
            return
        if packet.ssrc in self._video_ssrcs:
            self.stats["video_ignored"] += 1
            return
        if packet.payload_type != OPUS_PAYLOAD_TYPE:
            self.stats["not_audio"] += 1
            return
        if packet.ssrc not in self._ssrc_user:
            self._hold(packet, now)
            return
        self._accept(packet, now)

    def _hold(self, packet: RtpPacket, now: float) -> None:
        held = self._pending.get(packet.ssrc)
        if held is None:
            if len(self._pending) >= _MAX_PENDING_SSRCS:
                # Evict the SSRC whose newest audio is oldest.
                stale = min(self._pending, key=lambda s: self._pending[s][-1][0] if self._pending[s] else -1.0)
                self.stats["unmapped_dropped"] += len(self._pending.pop(stale))
            held = self._pending[packet.ssrc] = deque()
        held.append((now, packet))
        self.stats["unmapped_held"] += 1
        self._prune_held(held, now)

    def _prune_held(self, held: deque[tuple[float, RtpPacket]], now: float) -> None:
        limit = max(1, int(self.hold_unmapped * 1000 / 20) * 2)
        while held and (now - held[0][0] > self.hold_unmapped or len(held) > limit):
            held.popleft()
            self.stats["unmapped_dropped"] += 1

    def _accept(self, packet: RtpPacket, now: float) -> None:
        """Packet of a mapped SSRC: DAVE-decrypt, then into its jitter buffer."""
        user_id = self._ssrc_user[packet.ssrc]
        frame = self._dave_decrypt(user_id, packet.payload)
        if frame is None:
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = _Stream(
                user_id=user_id, decoder=self._opus.Decoder(), downsample=_Downsampler(self.sample_rate)
            )
        seq = packet.sequence
        if stream.next_seq is None:
            stream.next_seq = seq
        ahead = _seq_ahead(seq, stream.next_seq)
        if ahead < 0 and not stream.primed and -ahead <= _MAX_BUFFERED:
            stream.next_seq = seq  # reordered at the very start: begin earlier
        elif ahead < 0:
            if -ahead > _RESTART_BEHIND:
                self._restart(stream, seq, now)
            else:
                self.stats["late"] += 1
                return
        elif ahead > _RESYNC_AHEAD:
            self._restart(stream, seq, now)
        if seq in stream.buffer:
            self.stats["duplicates"] += 1
            return
        stream.buffer[seq] = (frame, now)
        stream.last_arrival = now
        self._release(stream, now, force=len(stream.buffer) > _MAX_BUFFERED)

    def _restart(self, stream: _Stream, seq: int, now: float) -> None:
        """The sender's sequence jumped: play out what is buffered, then start at ``seq``.

        Nothing is filled for the jump: it is a discontinuity, not lost audio.
        """
        self.stats["restarts"] += 1
        self._release(stream, now, force=True, until_empty=True)
        stream.next_seq = seq
        stream.silence_credit = 0

    def _dave_decrypt(self, user_id: int, payload: bytes) -> bytes | None:
        session = self._dave() if callable(self._dave) and not hasattr(self._dave, "decrypt") else self._dave
        if session is None or payload == OPUS_SILENCE_FRAME:
            return payload
        if not getattr(session, "ready", False):
            # No MLS group yet (DAVE off, or a transition under way): frames are plain Opus.
            if is_dave_frame(payload):
                self.stats["dave_errors"] += 1
                return None
            self.stats["dave_passthrough"] += 1
            return payload
        try:
            import davey

            return bytes(session.decrypt(user_id, davey.MediaType.audio, payload))
        except Exception:
            self.stats["dave_errors"] += 1
            return None

    # ------------------------------------------------------------------ jitter buffer

    def _release(self, stream: _Stream, now: float, *, force: bool = False, until_empty: bool = False) -> None:
        buffer = stream.buffer
        if not stream.primed and buffer:
            # The first packet seen may not be the first sent: wait for the jitter delay
            # (or enough packets to cover it) before choosing where the stream starts.
            waited = now - min(arrival for _, arrival in buffer.values())
            if not force and len(buffer) <= self._prime_packets and waited < self.jitter:
                return
            stream.primed = True
        while buffer:
            assert stream.next_seq is not None
            item = buffer.pop(stream.next_seq, None)
            if item is not None:
                self._decode(stream, item[0])
                stream.next_seq = (stream.next_seq + 1) % _SEQ_MOD
                continue
            oldest = min(arrival for _, arrival in buffer.values())
            if not force and now - oldest < self.jitter:
                return
            next_seq = stream.next_seq
            first = min(buffer, key=lambda s: (s - next_seq) % _SEQ_MOD)
            gap = (first - stream.next_seq) % _SEQ_MOD
            self._conceal(stream, gap, buffer[first][0])
            stream.next_seq = first
            if not until_empty:
                force = False

    def _conceal(self, stream: _Stream, gap: int, next_frame: bytes) -> None:
        # Silence already emitted by flush() while the packets were missing stands in
        # for them: the timeline must not count that time twice.
        credit = min(gap, stream.silence_credit)
        stream.silence_credit -= credit
        missing = gap - credit
        if missing <= 0:
            return
        if missing > self.max_fill_frames:
            self.stats["discontinuities"] += 1
            return
        self.stats["concealed"] += missing
        for i in range(missing):
            pcm: bytes | None = None
            if i < _PLC_FRAMES and stream.started:
                try:
                    if i == missing - 1:
                        # The packet after the gap may carry this one as in-band FEC.
                        pcm = stream.decoder.decode(next_frame, fec=True)
                    else:
                        pcm = stream.decoder.decode(None)
                except Exception:
                    pcm = None
            if not pcm:
                pcm = bytes(_FRAME_SAMPLES * 4)
            self._emit(stream, stream.downsample(pcm))

    def _decode(self, stream: _Stream, frame: bytes) -> None:
        try:
            pcm = stream.decoder.decode(frame, fec=False)
        except Exception:
            self.stats["decode_errors"] += 1
            return
        if not pcm:
            self.stats["decode_errors"] += 1
            return
        self.stats["packets"] += 1
        stream.started = True
        stream.tail_frames = 0
        stream.silence_credit = 0
        self._emit(stream, stream.downsample(pcm))

    def _emit_tail_silence(self, stream: _Stream, now: float) -> None:
        if not stream.started or stream.buffer or self.tail_silence_frames == 0:
            return
        quiet = now - stream.last_arrival - self.jitter
        due = min(int(quiet / 0.020), self.tail_silence_frames) - stream.tail_frames
        for _ in range(max(0, due)):
            stream.tail_frames += 1
            stream.silence_credit += 1
            self.stats["tail_silence_frames"] += 1
            self._emit(stream, self._silence)

    def _emit(self, stream: _Stream, pcm: bytes) -> None:
        if not pcm:
            return
        try:
            self._on_audio(stream.user_id, pcm)
        except Exception:
            self.stats["callback_errors"] += 1
            logger.opt(exception=True).debug("Discord voice receiver: on_audio raised")
