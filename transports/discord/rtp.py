"""RTP packets as Discord's voice servers send them (RFC 3550, RFC 8285).

A Discord voice datagram is a 12-byte RTP header, optional CSRCs, an optional
one-byte header extension (profile ``0xBEDE``) and the payload. In the ``*_rtpsize``
transport modes the 4-byte extension *header* travels in the clear while the
extension *body* is encrypted together with the payload, so
:func:`rtp_header_size` can tell how much of a datagram is plaintext without
touching the ciphertext. RTCP (sender/receiver reports, payload types 200-204)
shares the socket and is recognised by :func:`is_rtcp` so it can be skipped.

Example:
    >>> packet = parse_rtp(datagram)
    >>> packet.sequence, packet.ssrc, len(packet.payload)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "OPUS_PAYLOAD_TYPE",
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "packet_from_parts",
    "is_rtcp",
    "parse_rtp",
    "rtp_header_size",
]

RTP_VERSION = 2
#: The dynamic payload type Discord uses for Opus audio.
OPUS_PAYLOAD_TYPE = 120
#: RTCP packet types (SR, RR, SDES, BYE, APP) as they appear in the second byte.
_RTCP_TYPES = range(200, 205)
_FIXED_HEADER = 12


class RtpError(ValueError):
    """A datagram is not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One parsed RTP packet.

    Attributes:
        version: RTP version (2 for every valid packet).
        padding: Whether the padding bit was set (the padding is already removed
            from ``payload``).
        extension: Whether a header extension is present.
        csrc_count: Number of contributing sources.
        marker: The marker bit.
        payload_type: 7-bit payload type (120 is Discord's Opus).
        sequence: 16-bit sequence number.
        timestamp: 32-bit media timestamp (48 kHz for Opus).
        ssrc: Synchronisation source: one per sender and media stream.
        csrcs: Contributing sources.
        extension_profile: The extension profile (``0xBEDE`` for one-byte
            extensions), or ``None`` without an extension.
        extension_data: The extension body (its elements, undecoded).
        payload: The media payload after the extension body.
    """

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    extension_data: bytes
    payload: bytes


def is_rtcp(data: bytes) -> bool:
    """Whether ``data`` looks like an RTCP packet (version 2, packet type 200-204).

    RTCP's packet type sits where RTP keeps the marker bit and payload type, so an
    RTP packet never matches: Discord's audio payload type 120 with or without the
    marker is 120 or 248.
    """
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and data[1] in _RTCP_TYPES


def rtp_header_size(data: bytes, *, include_extension_body: bool = False) -> int:
    """The size of the header that precedes the (possibly encrypted) payload.

    Args:
        data: A datagram.
        include_extension_body: Count the extension body too. Leave it off for the
            ``*_rtpsize`` transport modes, where the body is encrypted: the result
            is then the additional authenticated data of the AEAD.

    Returns:
        Fixed header + CSRCs + 4-byte extension header (+ body when asked).

    Raises:
        RtpError: ``data`` is too short for the header it announces, or not RTP v2.
    """
    if len(data) < _FIXED_HEADER:
        raise RtpError(f"RTP packet too short: {len(data)} bytes")
    if data[0] >> 6 != RTP_VERSION:
        raise RtpError(f"not RTP version 2 (version {data[0] >> 6})")
    size = _FIXED_HEADER + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < size + 4:
            raise RtpError("RTP packet truncated inside the extension header")
        words = struct.unpack_from(">H", data, size + 2)[0]
        size += 4
        if include_extension_body:
            size += 4 * words
    if len(data) < size:
        raise RtpError(f"RTP packet truncated: header needs {size} bytes, has {len(data)}")
    return size


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse a plaintext RTP packet.

    Args:
        data: The datagram (for Discord: after transport decryption, or a packet
            built in the clear).

    Returns:
        The parsed packet; padding (when the P bit is set) is removed from the payload.

    Raises:
        RtpError: The packet is truncated, not version 2, or its padding count
            is larger than the payload.
    """
    data = bytes(data)
    end_of_header = rtp_header_size(data, include_extension_body=True)
    first = data[0]
    csrc_count = first & 0x0F
    profile: int | None = None
    extension_data = b""
    if first & 0x10:
        at = _FIXED_HEADER + 4 * csrc_count
        profile = struct.unpack_from(">H", data, at)[0]
        extension_data = data[at + 4 : end_of_header]
    return packet_from_parts(data, profile, extension_data, data[end_of_header:])


def packet_from_parts(
    header: bytes, profile: int | None, extension_data: bytes, payload: bytes
) -> RtpPacket:
    """An ``RtpPacket`` from a header (its fixed part and CSRCs are read from ``header``)
    and the already separated extension body and payload; padding is removed.

    Shared by plaintext parsing and transport decryption, where the extension body and
    payload come out of the cipher.

    Raises:
        RtpError: The padding count is zero or larger than the payload.
    """
    first, second, sequence, timestamp, ssrc = struct.unpack_from(">BBHII", header, 0)
    csrc_count = first & 0x0F
    csrcs = struct.unpack_from(f">{csrc_count}I", header, _FIXED_HEADER) if csrc_count else ()
    padding = bool(first & 0x20)
    if padding:
        if not payload or payload[-1] == 0 or payload[-1] > len(payload):
            raise RtpError("RTP padding count is invalid")
        payload = payload[: -payload[-1]]
    return RtpPacket(
        version=first >> 6,
        padding=padding,
        extension=bool(first & 0x10),
        csrc_count=csrc_count,
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extension_data=bytes(extension_data),
        payload=bytes(payload),
    )
