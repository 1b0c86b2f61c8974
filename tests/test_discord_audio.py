"""Discord voice receive and send: RTP, transport crypto, DAVE, jitter buffer, SSRCs, playback.

Packets come from discord.py's own sending path (tests/discord_fakes.py): its Opus
encoder, RTP header and transport encryption, so the receiver is checked against
what a real Discord participant's client produces, not against itself.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
import types

import davey
import discord
import numpy as np
import pytest
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import VoiceConnectionState

from tests.discord_fakes import (
    KEY,
    MODES,
    AudioSink,
    DiscordSender,
    FakeClock,
    aligned_snr_db,
    encrypt_rtpsize,
)
from tests.fakes import dominant_frequency, tone
from transports.discord.crypto import (
    SUPPORTED_MODES,
    DecryptError,
    TransportDecryptor,
    is_dave_frame,
)
from transports.discord.hooks import attach_receiver
from transports.discord.player import FRAME_BYTES, InterpretationAudioSource
from transports.discord.receiver import VoiceReceiver
from transports.discord.rtp import RtpError, is_rtcp, parse_rtp

FRAME_16K = 320  # samples per 20 ms packet at 16 kHz


def make_receiver(sink, mode=MODES[0], clock=None, **kwargs) -> VoiceReceiver:
    return VoiceReceiver(sink, mode=mode, secret_key=KEY, clock=clock or FakeClock(), **kwargs)


# --------------------------------------------------------------------------- RTP


def test_parse_rtp_reads_header_csrcs_extension_and_padding():
    header = struct.pack(">BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 120, 65535, 123456789, 0xDEADBEEF)
    csrcs = struct.pack(">II", 7, 8)
    extension = struct.pack(">HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    packet = parse_rtp(header + csrcs + extension + b"opus" + b"\x00\x00\x03")

    assert (packet.version, packet.padding, packet.extension, packet.marker) == (2, True, True, True)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (120, 65535, 123456789, 0xDEADBEEF)
    assert packet.csrc_count == 2 and packet.csrcs == (7, 8)
    assert packet.extension_profile == 0xBEDE and packet.extension_data == b"\x10\xaa\x00\x00"
    assert packet.payload == b"opus"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x78\x00",  # shorter than the fixed header
        b"\x40" + bytes(15),  # RTP version 1
        b"\x82\x78" + bytes(10) + bytes(4),  # announces 2 CSRCs, has 1
        b"\x90\x78" + bytes(10) + b"\xbe\xde\x00\x05",  # extension body missing
        b"\xa0\x78" + bytes(10) + b"\x05",  # padding count larger than the payload
    ],
)
def test_parse_rtp_rejects_malformed_packets(data):
    with pytest.raises(RtpError):
        parse_rtp(data)
    assert issubclass(RtpError, ValueError)


def test_rtcp_is_told_apart_from_discord_rtp():
    receiver_report = struct.pack(">BBHI", 0x81, 201, 7, 1234) + bytes(24)
    sender_report = struct.pack(">BBHI", 0x80, 200, 6, 1234) + bytes(20)
    assert is_rtcp(receiver_report) and is_rtcp(sender_report)
    audio = DiscordSender(MODES[0]).send_pcm16k(tone(440, 0.02))[0]
    assert not is_rtcp(audio)
    assert not is_rtcp(b"\x00\x02\x00\x46" + bytes(70))  # IP discovery reply


# --------------------------------------------------------------------------- transport crypto


@pytest.mark.parametrize("mode", MODES)
def test_decrypt_strips_the_encrypted_extension_body(mode):
    # Discord clients send a one-byte header extension (0xBEDE): its 4-byte header is
    # clear and authenticated, its body is encrypted with the Opus payload.
    header = struct.pack(">BBHII", 0x90 | 1, 120, 42, 960, 555) + struct.pack(">I", 99) + struct.pack(">HH", 0xBEDE, 2)
    ext_body = b"\x10\x7f\x21\x01\x02\x00\x00\x00"
    datagram = encrypt_rtpsize(mode, KEY, header, ext_body + b"OPUSFRAME", counter=7)

    packet = TransportDecryptor(mode, KEY).decrypt(datagram)

    assert packet.payload == b"OPUSFRAME"
    assert packet.extension_data == ext_body and packet.extension_profile == 0xBEDE
    assert (packet.sequence, packet.timestamp, packet.ssrc, packet.csrcs) == (42, 960, 555, (99,))


@pytest.mark.parametrize("mode", MODES)
def test_decrypt_rejects_tampered_wrong_key_and_truncated_packets(mode):
    datagram = DiscordSender(mode).send_pcm16k(tone(440, 0.02))[0]
    decryptor = TransportDecryptor(mode, KEY)
    assert decryptor.decrypt(datagram).payload  # the untouched packet is fine

    tampered_header = bytearray(datagram)
    tampered_header[3] ^= 1  # sequence number: authenticated as additional data
    tampered_body = bytearray(datagram)
    tampered_body[20] ^= 0x40
    for bad in (bytes(tampered_header), bytes(tampered_body), datagram[:-1], datagram[:20], b"\x80"):
        with pytest.raises(DecryptError):
            decryptor.decrypt(bad)
    with pytest.raises(DecryptError):
        TransportDecryptor(mode, bytes(32)).decrypt(datagram)


def test_only_the_current_modes_are_accepted():
    assert set(SUPPORTED_MODES) == set(MODES)
    with pytest.raises(ValueError, match="unsupported"):
        TransportDecryptor("xsalsa20_poly1305_lite", KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        TransportDecryptor(MODES[0], b"short")
    # discord.py negotiates from its own list: the mode it picks must be one we decrypt.
    assert set(discord.VoiceClient.supported_modes) & set(SUPPORTED_MODES)


# --------------------------------------------------------------------------- decode fidelity


@pytest.mark.parametrize("mode", MODES)
def test_tone_survives_discord_send_path_and_receiver(mode):
    sender = DiscordSender(mode)
    # Two tones (a DTMF pair): a single sine would let the alignment slip by periods.
    source = (tone(697, 1.0, amplitude=0.2) + tone(1209, 1.0, amplitude=0.2)).astype(np.int16)
    sink = AudioSink()
    receiver = make_receiver(sink, mode)
    receiver.map_ssrc(1234, 7)

    for datagram in sender.send_pcm16k(source):
        receiver.feed(datagram)

    decoded = sink.pcm(7)
    assert len(decoded) == len(source)  # 50 packets × 320 samples, no more, no less
    snr, lag = aligned_snr_db(source, decoded)
    print(f"tone SNR {mode}: {snr:.1f} dB (delay {lag} samples)")
    assert snr >= 30.0
    assert lag < 400
    assert receiver.stats["packets"] == 50 and receiver.stats["errors"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_real_speech_survives_discord_send_path_and_receiver(mode, librivox):
    # Opus is a perceptual codec: waveform SNR is a strict measure for it. At
    # discord.py's 128 kb/s its error sits ~20 dB under speech; 10 dB still fails any
    # misalignment, lost or mis-ordered frame, wrong gain, channel or sample rate.
    clip = librivox[0].pcm[: 16000 * 4]
    sender = DiscordSender(mode)
    sink = AudioSink()
    receiver = make_receiver(sink, mode)
    receiver.map_ssrc(1234, 7)

    for datagram in sender.send_pcm16k(clip):
        receiver.feed(datagram)

    snr, lag = aligned_snr_db(clip, sink.pcm(7))
    print(f"speech SNR {mode}: {snr:.1f} dB (delay {lag} samples = {lag / 16:.2f} ms)")
    assert snr >= 10.0
    assert lag < 400  # codec look-ahead + resampling, not a lost frame


def test_per_packet_decode_cost_is_far_below_real_time(librivox):
    sender = DiscordSender(MODES[0])
    datagrams = sender.send_pcm16k(librivox[1].pcm[: 16000 * 4])
    receiver = make_receiver(AudioSink())
    receiver.map_ssrc(1234, 7)
    start = time.perf_counter()
    for datagram in datagrams:
        receiver.feed(datagram)
    per_packet = (time.perf_counter() - start) / len(datagrams)
    print(f"receiver cost: {per_packet * 1e6:.0f} µs per 20 ms packet")
    assert per_packet < 0.010  # < half of real time even on a loaded 2-core machine


# --------------------------------------------------------------------------- jitter buffer


def _stream(seconds=1.0, freq=440.0, **sender_kwargs):
    return DiscordSender(MODES[0], **sender_kwargs).send_pcm16k(tone(freq, seconds))


def test_reordered_and_duplicated_packets_give_the_in_order_output():
    datagrams = _stream()
    in_order = AudioSink()
    reference = make_receiver(in_order)
    reference.map_ssrc(1234, 7)
    for d in datagrams:
        reference.feed(d)

    shuffled = list(datagrams)
    rng = random.Random(4)
    for i in range(0, len(shuffled) - 3, 3):  # local reordering, 3 packets (60 ms) deep
        window = shuffled[i : i + 3]
        rng.shuffle(window)
        shuffled[i : i + 3] = window
    shuffled += [shuffled[5], shuffled[17], shuffled[40]]  # duplicates, some very late
    shuffled.insert(10, datagrams[9])
    sink = AudioSink()
    receiver = make_receiver(sink)
    receiver.map_ssrc(1234, 7)
    for d in shuffled:
        receiver.feed(d)
    receiver.flush()

    assert np.array_equal(sink.pcm(7), in_order.pcm(7))
    assert receiver.stats["duplicates"] + receiver.stats["late"] == 4
    assert receiver.stats["concealed"] == 0


def test_lost_packets_are_concealed_and_the_timeline_kept():
    datagrams = _stream()
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, tail_silence_ms=0)
    receiver.map_ssrc(1234, 7)
    lost = {10, 11, 30, 31, 32}
    for i, d in enumerate(datagrams):
        if i not in lost:
            receiver.feed(d)
        clock.advance(0.02)
    receiver.flush(clock.advance(0.2))

    decoded = sink.pcm(7)
    assert len(decoded) == len(datagrams) * FRAME_16K  # every lost 20 ms filled
    assert receiver.stats["concealed"] == len(lost)
    # PLC continues the tone rather than leaving holes or clicks of garbage.
    concealed = decoded[10 * FRAME_16K : 12 * FRAME_16K]
    assert abs(dominant_frequency(concealed) - 440) < 50
    assert np.sqrt(np.mean(concealed.astype(float) ** 2)) > 1000


def test_a_gap_is_waited_for_jitter_ms_then_concealed_and_the_straggler_dropped():
    datagrams = _stream(0.2)
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, jitter_ms=60, tail_silence_ms=0)
    receiver.map_ssrc(1234, 7)

    receiver.feed(datagrams[1])  # the stream's first packets arrive out of order:
    receiver.feed(datagrams[0])  # its start waits until 60 ms worth of packets are in
    receiver.feed(datagrams[2])
    assert sink.calls == []
    receiver.feed(datagrams[3])
    assert len(sink.pcm()) == 4 * FRAME_16K  # ... and begins at the first one

    receiver.feed(datagrams[4])
    receiver.feed(datagrams[6])
    assert len(sink.pcm()) == 5 * FRAME_16K  # packet 6 waits for packet 5
    receiver.flush(clock.advance(0.04))
    assert len(sink.pcm()) == 5 * FRAME_16K  # still within the jitter delay
    receiver.feed(datagrams[5])  # arrives in time: released in order, nothing concealed
    assert len(sink.pcm()) == 7 * FRAME_16K and receiver.stats["concealed"] == 0

    receiver.feed(datagrams[8])
    receiver.flush(clock.advance(0.061))  # past the delay: 7 is given up
    assert len(sink.pcm()) == 9 * FRAME_16K and receiver.stats["concealed"] == 1
    receiver.feed(datagrams[7])
    assert receiver.stats["late"] == 1 and len(sink.pcm()) == 9 * FRAME_16K


def test_a_lone_first_packet_is_played_after_the_jitter_delay():
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, jitter_ms=60, tail_silence_ms=0)
    receiver.map_ssrc(1234, 7)
    receiver.feed(_stream(0.02)[0])
    receiver.flush(clock.advance(0.05))
    assert sink.calls == []
    receiver.flush(clock.advance(0.011))
    assert len(sink.pcm(7)) == FRAME_16K


def test_sequence_numbers_wrap_around():
    datagrams = _stream(0.4, sequence=65530)  # discord.py increments before sending
    sink = AudioSink()
    receiver = make_receiver(sink)
    receiver.map_ssrc(1234, 7)
    order = list(datagrams)
    order[4], order[6] = order[6], order[4]  # reorder across the wrap
    for d in order:
        receiver.feed(d)
    receiver.flush()
    assert parse_rtp(b"\x80\x78" + datagrams[6][2:12]).sequence < 10
    assert len(sink.pcm()) == len(datagrams) * FRAME_16K
    assert receiver.stats["late"] == receiver.stats["duplicates"] == receiver.stats["concealed"] == 0


def _packets_numbered(sequences, freq=440.0):
    """One 20 ms packet of a tone per sequence number, in the order given, as discord.py sends."""
    sender = DiscordSender(MODES[0])
    pcm = tone(freq, 0.02 * len(sequences))
    packets = []
    for i, seq in enumerate(sequences):
        sender.voice_client.sequence = (seq - 1) % 65536  # discord.py increments, then sends
        packets += sender.send_pcm16k(pcm[i * FRAME_16K : (i + 1) * FRAME_16K])
    assert [parse_rtp(b"\x80\x78" + p[2:12]).sequence for p in packets] == [s % 65536 for s in sequences]
    return packets


def _play(packets, **kwargs):
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, tail_silence_ms=0, **kwargs)
    receiver.map_ssrc(1234, 7)
    for packet in packets:
        receiver.feed(packet)
        clock.advance(0.02)
    receiver.flush(clock.advance(1.0))
    return receiver, len(sink.pcm(7)) // FRAME_16K


def test_a_jump_of_1000_sequence_numbers_resyncs_without_inventing_audio():
    packets = _packets_numbered([*range(100, 125), *range(1125, 1150)])
    receiver, frames = _play(packets)
    assert frames == 50  # exactly the audio sent: nothing filled for the jump
    assert receiver.stats["restarts"] == 1 and receiver.stats["packets"] == 50
    assert receiver.stats["concealed"] == 0


def test_a_sender_skipping_sequence_numbers_cannot_inflate_its_audio():
    # Every packet 20 or 50 sequence numbers after the last (with fills of up to 50
    # frames, the second came out 37× longer than sent): only the real audio comes out.
    for step in (20, 50):
        receiver, frames = _play(_packets_numbered(range(0, 50 * step, step)))
        assert frames == 50 and receiver.stats["packets"] == 50
        assert receiver.stats["discontinuities"] + receiver.stats["restarts"] == 49
    # Every packet 4 after the last (3 lost in between): filled, but 4× at most.
    receiver, frames = _play(_packets_numbered(range(0, 200, 4)))
    assert frames == 4 * 50 - 3 and receiver.stats["concealed"] == 3 * 49


def test_a_few_lost_frames_are_filled_more_are_a_discontinuity():
    receiver, frames = _play(_packets_numbered([*range(0, 10), *range(13, 20)]))  # 3 lost
    assert frames == 20 and receiver.stats["concealed"] == 3
    receiver, frames = _play(_packets_numbered([*range(0, 10), *range(14, 20)]))  # 4 lost
    assert frames == 16 and receiver.stats["discontinuities"] == 1 and receiver.stats["concealed"] == 0
    receiver, frames = _play(_packets_numbered([*range(0, 10), *range(14, 20)]), max_fill_frames=5)
    assert frames == 20 and receiver.stats["concealed"] == 4
    with pytest.raises(ValueError):
        make_receiver(AudioSink(), max_fill_frames=51)


def test_losses_and_jumps_across_the_65535_wrap():
    # Two packets lost exactly at the wrap (65535 and 0): concealed, in order.
    receiver, frames = _play(_packets_numbered([*range(65525, 65535), *range(1, 11)]))
    assert frames == 22 and receiver.stats["concealed"] == 2 and receiver.stats["restarts"] == 0
    # A jump of 1,000 across the wrap: resynced, nothing filled.
    receiver, frames = _play(_packets_numbered([*range(65000, 65020), *range(484, 504)]))
    assert frames == 40 and receiver.stats["restarts"] == 1 and receiver.stats["concealed"] == 0
    # Reordered and duplicated around the wrap: still the in-order stream.
    order = [65533, 65534, 0, 65535, 1, 2, 2, 4, 3, 5]
    receiver, frames = _play(_packets_numbered(order))
    assert frames == 9 and receiver.stats["duplicates"] + receiver.stats["late"] == 1
    assert receiver.stats["concealed"] == 0


def test_silence_is_emitted_after_a_user_goes_quiet_and_not_counted_twice():
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, jitter_ms=60, tail_silence_ms=600)
    receiver.map_ssrc(1234, 7)
    sender = DiscordSender(MODES[0])
    for d in sender.send_pcm16k(tone(440, 0.2)):
        receiver.feed(d)
        clock.advance(0.02)
    spoken = len(sink.pcm())
    for _ in range(100):  # 2 s of timer ticks while the user is quiet
        receiver.flush(clock.advance(0.02))
    tail = sink.pcm()[spoken:]
    assert len(tail) == 30 * FRAME_16K and not tail.any()  # 600 ms of silence, then nothing more

    # The user speaks again: Discord's sequence runs on without a gap, so nothing is concealed.
    for d in sender.send_pcm16k(tone(440, 0.2)):
        receiver.feed(d)
    assert receiver.stats["concealed"] == 0
    assert len(sink.pcm()) == spoken * 2 + len(tail)


# --------------------------------------------------------------------------- SSRCs and users


def test_two_speakers_land_on_their_own_user_ids():
    alice = DiscordSender(MODES[0], ssrc=111).send_pcm16k(tone(300, 0.5))
    bob = DiscordSender(MODES[0], ssrc=222).send_pcm16k(tone(1200, 0.5))
    sink = AudioSink()
    receiver = make_receiver(sink)
    receiver.map_ssrc(111, 1001)
    receiver.map_ssrc(222, 2002)
    for a, b in zip(alice, bob, strict=True):  # interleaved on one socket
        receiver.feed(a)
        receiver.feed(b)

    assert sink.users() == {1001, 2002}
    assert abs(dominant_frequency(sink.pcm(1001)) - 300) < 20
    assert abs(dominant_frequency(sink.pcm(2002)) - 1200) < 20
    assert len(sink.pcm(1001)) == len(sink.pcm(2002)) == 25 * FRAME_16K


def test_unmapped_audio_is_held_until_speaking_arrives_then_dropped_when_too_old():
    clock = FakeClock()
    sink = AudioSink()
    receiver = make_receiver(sink, clock=clock, hold_unmapped_ms=1000, tail_silence_ms=0)
    early = DiscordSender(MODES[0], ssrc=111).send_pcm16k(tone(440, 0.3))
    for d in early:
        receiver.feed(d)
        clock.advance(0.02)
    assert sink.calls == [] and receiver.stats["unmapped_held"] == 15
    receiver.map_ssrc(111, 1001)  # SPEAKING came 300 ms after the audio
    assert len(sink.pcm(1001)) == 15 * FRAME_16K

    late = DiscordSender(MODES[0], ssrc=222).send_pcm16k(tone(440, 0.3))
    for d in late:
        receiver.feed(d)
    receiver.flush(clock.advance(1.5))  # nobody claimed SSRC 222 within a second
    receiver.map_ssrc(222, 2002)
    assert 2002 not in sink.users() and receiver.stats["unmapped_dropped"] == 15


def test_video_ssrc_is_ignored_and_remove_user_stops_audio():
    sink = AudioSink()
    receiver = make_receiver(sink)
    receiver.map_ssrc(111, 1001, video_ssrc=112)
    video = DiscordSender(MODES[0], ssrc=112).send_pcm16k(tone(440, 0.1))
    audio = DiscordSender(MODES[0], ssrc=111)
    for d in video:
        receiver.feed(d)
    assert sink.calls == [] and receiver.stats["video_ignored"] == 5

    for d in audio.send_pcm16k(tone(440, 0.1)):
        receiver.feed(d)
    assert len(sink.pcm(1001)) == 5 * FRAME_16K
    receiver.remove_user(1001)
    for d in audio.send_pcm16k(tone(440, 0.1)):
        receiver.feed(d)
    receiver.flush()
    assert len(sink.pcm(1001)) == 5 * FRAME_16K
    assert receiver.users() == {}


def test_rtcp_non_audio_and_keyless_datagrams_are_counted_not_decoded():
    sink = AudioSink()
    clock = FakeClock()
    receiver = VoiceReceiver(sink, clock=clock, tail_silence_ms=0)  # no session key yet
    datagram = _stream(0.02)[0]
    receiver.feed(datagram)
    assert receiver.stats["no_key"] == 1
    receiver.set_transport(MODES[0], KEY)
    receiver.map_ssrc(1234, 7)
    receiver.feed(struct.pack(">BBHI", 0x81, 201, 7, 1234) + bytes(24))
    receiver.feed(b"\x00\x02\x00\x46" + bytes(70))
    header = struct.pack(">BBHII", 0x80, 101, 1, 0, 1234)  # a video payload type
    receiver.feed(encrypt_rtpsize(MODES[0], KEY, header, b"frame", 0))
    receiver.feed(datagram)
    receiver.flush(clock.advance(0.1))
    assert (receiver.stats["rtcp"], receiver.stats["not_rtp"], receiver.stats["not_audio"]) == (1, 1, 1)
    assert len(sink.pcm(7)) == FRAME_16K


# --------------------------------------------------------------------------- DAVE


def test_dave_session_without_a_group_passes_plain_opus_through():
    # What davey 0.1.7 allows without Discord's voice server: a DaveSession has no MLS
    # group until the server (the MLS external sender) sends proposals/welcome, so it
    # is not ready, decrypt() raises NoDecryptorForUser and encrypt_opus() NotReady.
    # In that state (DAVE not yet active, or a downgrade) frames are plain Opus.
    session = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, 555, 777)
    assert not session.ready
    with pytest.raises(ValueError):
        session.decrypt(1001, davey.MediaType.audio, b"\xfc\x00")
    with pytest.raises(ValueError):
        session.encrypt_opus(b"\xfc\x00")

    sink = AudioSink()
    receiver = make_receiver(sink, dave_session=session)
    receiver.map_ssrc(1234, 1001)
    for d in _stream(0.1):
        receiver.feed(d)
    assert len(sink.pcm(1001)) == 5 * FRAME_16K
    assert receiver.stats["dave_passthrough"] == 5

    # A frame that is DAVE-encrypted cannot be played without a group: dropped, counted.
    sealed = b"\x11" * 40 + b"\x00" * 8 + b"\x01\x00" + b"\x0c" + b"\xfa\xfa"
    assert is_dave_frame(sealed)
    header = struct.pack(">BBHII", 0x80, 120, 100, 0, 1234)
    receiver.feed(encrypt_rtpsize(MODES[0], KEY, header, sealed, 99))
    assert receiver.stats["dave_errors"] == 1 and len(sink.pcm(1001)) == 5 * FRAME_16K


class _ReadyDaveSession:
    """Stands in for an active davey.DaveSession (a real one needs Discord's MLS
    external sender): "encrypts" by XOR and appends a DAVE-shaped trailer, and
    records what the receiver asks it to decrypt."""

    ready = True

    def __init__(self) -> None:
        self.calls: list[tuple[int, object]] = []

    @staticmethod
    def seal(frame: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in frame) + bytes(9) + b"\x0c\xfa\xfa"

    def decrypt(self, user_id: int, media_type: object, packet: bytes) -> bytes:
        self.calls.append((user_id, media_type))
        if user_id != 1001 or not is_dave_frame(packet):
            raise ValueError("Failed to decrypt: NoDecryptorForUser")
        return bytes(b ^ 0x5A for b in packet[:-12])


def test_active_dave_session_decrypts_each_frame_for_the_mapped_user():
    sender = DiscordSender(MODES[0])
    plain_frames = []
    original_encode = sender.voice_client.encoder.encode

    def encode_and_seal(pcm, frame_size):
        frame = original_encode(pcm, frame_size)
        plain_frames.append(frame)
        return _ReadyDaveSession.seal(frame)

    sender.voice_client.encoder.encode = encode_and_seal
    datagrams = sender.send_pcm16k(tone(440, 0.1))
    session = _ReadyDaveSession()
    sink = AudioSink()
    receiver = make_receiver(sink, dave_session=lambda: session)
    receiver.map_ssrc(1234, 1001)
    for d in datagrams:
        receiver.feed(d)
    assert session.calls == [(1001, davey.MediaType.audio)] * 5
    assert len(sink.pcm(1001)) == 5 * FRAME_16K and receiver.stats["dave_errors"] == 0

    # Discord's silence frame is never DAVE-encrypted; frames of a user outside the
    # group fail and are dropped rather than decoded as noise.
    header = struct.pack(">BBHII", 0x80, 120, 6, 0, 1234)
    receiver.feed(encrypt_rtpsize(MODES[0], KEY, header, b"\xf8\xff\xfe", 50))
    assert len(session.calls) == 5 and len(sink.pcm(1001)) == 6 * FRAME_16K
    receiver.map_ssrc(4321, 2002)
    other = DiscordSender(MODES[0], ssrc=4321)
    other.voice_client.encoder.encode = encode_and_seal
    for d in other.send_pcm16k(tone(440, 0.04)):
        receiver.feed(d)
    assert receiver.stats["dave_errors"] == 2 and 2002 not in sink.users()


# --------------------------------------------------------------------------- discord.py hooks


class _FakeAiohttpSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)


async def test_attach_receiver_hooks_discord_py_socket_reader_and_voice_websocket():
    # discord.py's real VoiceConnectionState (its socket-reader thread included) and
    # DiscordVoiceWebSocket.received_message; only the network ends are local.
    voice_client = types.SimpleNamespace()
    state = VoiceConnectionState(voice_client)  # starts discord.py's SocketReader thread
    voice_client._connection = state
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    await asyncio.sleep(0.05)  # let the reader thread park itself, as it does at start-up
    state._create_socket()  # discord.py's own: a non-blocking UDP socket, reader resumed
    state.socket.bind(("127.0.0.1", 0))
    ws = DiscordVoiceWebSocket(_FakeAiohttpSocket(), asyncio.get_running_loop())
    ws._connection = state
    state.ws = ws
    state.ssrc = 99  # the bot's own SSRC, sent back in SPEAKING
    enough = threading.Event()
    sink = AudioSink()

    def on_audio(user_id, pcm):
        sink(user_id, pcm)
        if len(sink.pcm(1001)) >= 5 * FRAME_16K:
            enough.set()

    receiver = VoiceReceiver(on_audio)
    detach = attach_receiver(voice_client, receiver, flush_interval=0.02)
    try:
        await ws.received_message(
            {"op": 4, "d": {"mode": MODES[0], "secret_key": list(KEY), "dave_protocol_version": 0}}
        )
        await ws.received_message({"op": 5, "d": {"user_id": "1001", "ssrc": 111, "speaking": 1}})
        await ws.received_message(
            {"op": 12, "d": {"user_id": "2002", "audio_ssrc": 222, "video_ssrc": 223}}
        )
        assert receiver.users() == {111: 1001, 222: 2002}

        target = state.socket.getsockname()
        # Video first: the reader handles datagrams in order, so once the audio is
        # through, the video packets have been seen too.
        for d in DiscordSender(MODES[0], ssrc=223).send_pcm16k(tone(440, 0.04)):
            server.sendto(d, target)
        for d in DiscordSender(MODES[0], ssrc=111).send_pcm16k(tone(440, 0.1)):
            server.sendto(d, target)
        assert await asyncio.to_thread(enough.wait, 10)
        assert receiver.stats["video_ignored"] == 2

        await ws.received_message({"op": 13, "d": {"user_id": "2002"}})
        assert receiver.users() == {111: 1001}
    finally:
        detach()
    assert state.hook is None and "_hook" not in ws.__dict__
    before = receiver.stats["datagrams"]
    server.sendto(b"\x80" * 40, state.socket.getsockname())
    await asyncio.sleep(0.2)
    assert receiver.stats["datagrams"] == before  # unregistered from the reader
    state._socket_reader.stop()
    server.close()
    state.socket.close()


def test_attach_receiver_uses_discord_py_dave_session_only_while_dave_is_negotiated():
    listeners = []
    state = types.SimpleNamespace(
        hook=None,
        ws=None,
        mode=MODES[0],
        secret_key=list(KEY),
        dave_session=_ReadyDaveSession(),
        dave_protocol_version=0,  # DAVE downgraded / not negotiated
        add_socket_listener=listeners.append,
        remove_socket_listener=listeners.remove,
    )
    sink = AudioSink()
    receiver = VoiceReceiver(sink, clock=FakeClock())
    detach = attach_receiver(types.SimpleNamespace(_connection=state), receiver, flush_interval=None)
    receiver.map_ssrc(1234, 1001)
    datagrams = _stream(0.2)
    for d in datagrams[:5]:
        listeners[0](d)  # what discord.py's socket reader would call
    assert len(sink.pcm(1001)) == 5 * FRAME_16K and state.dave_session.calls == []

    state.dave_protocol_version = 1  # DAVE on: plain frames now fail and are dropped
    for d in datagrams[5:8]:
        listeners[0](d)
    assert len(state.dave_session.calls) == 3 and receiver.stats["dave_errors"] == 3
    assert len(sink.pcm(1001)) == 5 * FRAME_16K
    detach()
    assert listeners == [] and state.hook is None


# --------------------------------------------------------------------------- playback


def _drain(source: InterpretationAudioSource, frames: int) -> np.ndarray:
    out = []
    for _ in range(frames):
        chunk = source.read()
        assert len(chunk) == FRAME_BYTES == 3840
        out.append(np.frombuffer(chunk, np.int16))
    return np.concatenate(out).reshape(-1, 2)


def test_audio_source_reads_20ms_frames_and_silence_while_idle():
    source = InterpretationAudioSource()
    assert source.is_opus() is False
    assert not _drain(source, 5).any()
    source.enqueue(np.full(480, 1000, np.int16).tobytes(), 48000)  # 10 ms
    frames = _drain(source, 2)
    assert (frames[:480] == 1000).all() and not frames[480:].any()
    assert (frames[:, 0] == frames[:, 1]).all()  # mono to both channels


def test_audio_source_resamples_any_rate_to_48k_stereo():
    source = InterpretationAudioSource()
    source.enqueue(tone(500, 0.5, rate=22050).tobytes(), 22050, key=(1,))
    source.finish((1,))
    left = _drain(source, 30)[:, 0]
    assert abs(np.flatnonzero(left)[-1] + 1 - 24000) < 100  # 0.5 s at 48 kHz
    assert abs(dominant_frequency(left[: 24000], rate=48000) - 500) < 5


def _level_key(samples: np.ndarray) -> list[int]:
    """The sequence of distinct non-silent levels, in play order."""
    seen: list[int] = []
    for v in samples[:, 0]:
        if v and (not seen or seen[-1] != v):
            seen.append(int(v))
    return seen


def _block(level: int, ms: int = 40) -> bytes:
    return np.full(48 * ms, level, np.int16).tobytes()


def test_utterances_play_in_key_order_even_when_a_later_one_is_ready_first():
    starts, dones = [], []
    source = InterpretationAudioSource(on_start=starts.append, on_done=dones.append)
    source.announce((1.0, 1))
    source.announce((2.0, 2))
    source.enqueue(_block(300), 48000, key=(2.0, 2))  # the later utterance is synthesized first
    source.finish((2.0, 2))
    assert not _drain(source, 3).any()  # waits for (1.0, 1)
    source.enqueue(_block(100), 48000, key=(1.0, 1))
    assert _level_key(_drain(source, 4)) == [100]
    source.enqueue(_block(200), 48000, key=(1.0, 1))  # more of the playing utterance
    source.finish((1.0, 1))
    assert _level_key(_drain(source, 10)) == [200, 300]
    assert starts == [(1.0, 1), (2.0, 2)] and dones == [(1.0, 1), (2.0, 2)]

    # Abandoned utterances do not hold the queue; late chunks of done keys are dropped.
    source.announce((3.0, 3))
    source.enqueue(_block(400), 48000, key=(4.0, 4))
    source.finish((4.0, 4))
    source.abandon((3.0, 3))
    source.enqueue(_block(999), 48000, key=(3.0, 3))
    assert _level_key(_drain(source, 5)) == [400] and source.dropped_chunks == 1


def test_clear_drops_everything_queued():
    source = InterpretationAudioSource()
    source.enqueue(_block(100, 200), 48000, key=(1,))
    source.enqueue(_block(50, 200), 48000)
    source.clear()
    assert not _drain(source, 12).any() and source.pending_keys() == []


def test_audio_source_is_thread_safe_with_a_writer_and_a_reader_thread():
    source = InterpretationAudioSource()
    n_utterances, chunks_each = 30, 8
    errors: list[BaseException] = []
    played: list[np.ndarray] = []
    stop = threading.Event()

    def writer():
        try:
            # Keys announced in order, chunks arriving interleaved and out of order.
            keys = [(float(i), i) for i in range(n_utterances)]
            for key in keys:
                source.announce(key)
            order = [(k, c) for k in keys for c in range(chunks_each)]
            random.Random(1).shuffle(order)
            sent = {k: 0 for k in keys}
            pending = list(order)
            while pending:
                key, _ = pending.pop()
                level = 10 + key[1]
                source.enqueue(np.full(96, level, np.int16).tobytes(), 48000, key=key)
                sent[key] += 1
                if sent[key] == chunks_each:
                    source.finish(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            while not stop.is_set():
                chunk = source.read()
                assert len(chunk) == FRAME_BYTES
                played.append(np.frombuffer(chunk, np.int16))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    threads[0].join(timeout=20)
    deadline = time.monotonic() + 20
    while source.pending_keys() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    threads[1].join(timeout=20)

    assert not errors
    samples = np.concatenate(played).reshape(-1, 2)
    assert np.count_nonzero(samples[:, 0]) == n_utterances * chunks_each * 96
    assert _level_key(samples) == [10 + i for i in range(n_utterances)]
