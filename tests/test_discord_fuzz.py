"""Property-based fuzzing of the Discord voice receiver's input side.

Whatever arrives on the UDP socket — random bytes, truncated or bit-flipped packets,
authentic packets with garbage Opus inside, any order, any number of copies — ``feed``
must return quickly, never raise, and never get into an unexpected state (its
``errors`` counter, which counts exceptions it did not anticipate, stays at zero).
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.discord_fakes import KEY, MODES, AudioSink, DiscordSender, FakeClock, encrypt_rtpsize
from tests.fakes import tone
from transports.discord.receiver import VoiceReceiver
from transports.discord.rtp import RtpError, parse_rtp

#: Seconds one feed() may take. A packet costs well under a millisecond; the bound is
#: generous because other test runs share the two cores.
MAX_FEED_S = 0.25

FUZZ = settings(
    max_examples=150,
    deadline=None,  # timing is asserted per call instead, with a margin for a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def clean_stream() -> list[bytes]:
    return DiscordSender(MODES[0], ssrc=1234).send_pcm16k(tone(440, 0.6))


def _receiver(clock: FakeClock) -> VoiceReceiver:
    receiver = VoiceReceiver(AudioSink(), mode=MODES[0], secret_key=KEY, clock=clock)
    receiver.map_ssrc(1234, 7)
    receiver.map_ssrc(4321, 8, video_ssrc=4322)
    return receiver


def _feed_all(receiver: VoiceReceiver, clock: FakeClock, datagrams, step: float = 0.0) -> None:
    for datagram in datagrams:
        start = time.perf_counter()
        receiver.feed(datagram)
        assert time.perf_counter() - start < MAX_FEED_S
        clock.advance(step)
    start = time.perf_counter()
    receiver.flush(clock.advance(2.0))
    assert time.perf_counter() - start < MAX_FEED_S * 4
    assert receiver.stats["errors"] == 0, receiver.stats
    assert receiver.stats["datagrams"] == len(datagrams)


@FUZZ
@given(st.lists(st.binary(max_size=400), max_size=40))
def test_random_bytes_never_raise(datagrams):
    clock = FakeClock()
    _feed_all(_receiver(clock), clock, datagrams)


@FUZZ
@given(st.binary(max_size=300))
def test_parse_rtp_raises_only_rtp_error(data):
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert packet.version == 2 and len(packet.payload) <= len(data) - 12


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 29),  # which clean packet to damage
            st.sampled_from(["truncate", "flip", "extend"]),
            st.integers(0, 400),
            st.integers(0, 7),
        ),
        max_size=40,
    )
)
def test_truncated_and_garbled_authentic_packets_never_raise(clean_stream, damage):
    datagrams = []
    for index, how, at, bit in damage:
        packet = bytearray(clean_stream[index])
        if how == "truncate":
            packet = packet[: at % len(packet)]  # always shorter than sent
        elif how == "flip":
            packet[at % len(packet)] ^= 1 << bit
        else:
            packet += bytes([at % 256]) * (bit + 1)
        datagrams.append(bytes(packet))
    clock = FakeClock()
    receiver = _receiver(clock)
    _feed_all(receiver, clock, datagrams)
    assert receiver.stats["packets"] == 0  # nothing damaged is authentic


rtp_fields = st.fixed_dictionaries(
    {
        "payload_type": st.sampled_from([120, 120, 120, 101, 0, 127]),
        # Mostly close together, to work the jitter buffer; sometimes anywhere.
        "sequence": st.integers(0, 60) | st.integers(65500, 65535) | st.integers(0, 65535),
        "timestamp": st.integers(0, 2**32 - 1),
        "ssrc": st.sampled_from([1234, 4321, 4322, 9999, 0]),
        "marker": st.booleans(),
        "csrcs": st.lists(st.integers(0, 2**32 - 1), max_size=3),
        "extension_words": st.none() | st.integers(0, 4),
        "padding": st.sampled_from([False, False, False, True]),
        "payload": st.binary(max_size=200),
        # The receiver expects MODES[0]: packets in the other mode fail authentication.
        "mode": st.sampled_from([MODES[0], MODES[0], MODES[0], MODES[1]]),
    }
)


def _authentic(fields) -> bytes:
    first = 0x80 | len(fields["csrcs"]) | (0x20 if fields["padding"] else 0)
    ext_body = b""
    ext_header = b""
    if fields["extension_words"] is not None:
        first |= 0x10
        ext_header = struct.pack(">HH", 0xBEDE, fields["extension_words"])
        ext_body = bytes(range(4 * fields["extension_words"]))
    header = struct.pack(
        ">BBHII",
        first,
        fields["payload_type"] | (0x80 if fields["marker"] else 0),
        fields["sequence"],
        fields["timestamp"],
        fields["ssrc"],
    )
    header += b"".join(struct.pack(">I", c) for c in fields["csrcs"]) + ext_header
    return encrypt_rtpsize(fields["mode"], KEY, header, ext_body + fields["payload"], fields["sequence"])


@FUZZ
@given(st.lists(rtp_fields, max_size=40), st.floats(0, 0.05))
def test_authentic_packets_with_garbage_inside_never_raise(packets, step):
    clock = FakeClock()
    receiver = _receiver(clock)
    _feed_all(receiver, clock, [_authentic(p) for p in packets], step)


@FUZZ
@given(st.data())
def test_any_reordering_and_duplication_keeps_the_stream_and_never_raises(clean_stream, data):
    order = data.draw(st.permutations(range(len(clean_stream))))
    duplicates = data.draw(st.lists(st.integers(0, len(clean_stream) - 1), max_size=10))
    datagrams = [clean_stream[i] for i in order]
    for i in duplicates:
        datagrams.insert(data.draw(st.integers(0, len(datagrams))), clean_stream[i])
    clock = FakeClock()
    receiver = _receiver(clock)
    _feed_all(receiver, clock, datagrams)
    # Every packet is either played (once) or reported: nothing vanishes silently.
    stats = receiver.stats
    assert stats["packets"] + stats["late"] + stats["duplicates"] == len(datagrams)
    assert stats["packets"] <= len(clean_stream)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 3), st.integers(0, 50))
def test_reordering_within_the_jitter_window_loses_nothing(clean_stream, depth, seed):
    """Packets swapped at most ``depth`` places (≤ 60 ms) all play, in order."""
    import random

    rng = random.Random(seed)
    keyed = [(i + rng.uniform(0, depth), d) for i, d in enumerate(clean_stream)]
    datagrams = [d for _, d in sorted(keyed, key=lambda item: item[0])]
    reference = AudioSink()
    clean = VoiceReceiver(reference, mode=MODES[0], secret_key=KEY, clock=FakeClock(), tail_silence_ms=0)
    clean.map_ssrc(1234, 7)
    for d in clean_stream:
        clean.feed(d)
    clean.flush(clean._clock() + 1)

    clock = FakeClock()
    sink = AudioSink()
    receiver = VoiceReceiver(sink, mode=MODES[0], secret_key=KEY, clock=clock, tail_silence_ms=0)
    receiver.map_ssrc(1234, 7)
    for d in datagrams:
        receiver.feed(d)
        clock.advance(0.02)
    receiver.flush(clock.advance(1))
    assert receiver.stats["packets"] == len(clean_stream) and receiver.stats["concealed"] == 0
    assert sink.pcm(7).tobytes() == reference.pcm(7)[: len(sink.pcm(7))].tobytes()
