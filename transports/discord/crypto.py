"""Discord voice transport encryption: the two ``*_rtpsize`` AEAD modes.

Every voice datagram in these modes is laid out as::

    RTP header (fixed 12 bytes + CSRCs + 4-byte extension header, in the clear)
    ciphertext (extension body + Opus payload) || 16-byte tag
    4-byte big-endian nonce counter

The clear header is the AEAD's additional data; the nonce is the 4-byte counter
followed by zeros up to the cipher's nonce size (24 bytes for XChaCha20-Poly1305,
12 for AES-256-GCM). After decryption the extension body (``4 * length`` bytes
announced by the extension header) is stripped, leaving the Opus frame — or, when
DAVE end-to-end encryption is on, the DAVE frame that wraps it (see
:func:`is_dave_frame`). The legacy ``xsalsa20_poly1305*`` modes were retired by
Discord in November 2024 and are not supported.

Example:
    >>> decryptor = TransportDecryptor("aead_xchacha20_poly1305_rtpsize", secret_key)
    >>> packet = decryptor.decrypt(datagram)   # packet.payload is the Opus frame
"""

from __future__ import annotations

import struct

from transports.discord.rtp import RtpError, RtpPacket, packet_from_parts, rtp_header_size

__all__ = [
    "DAVE_MAGIC_MARKER",
    "OPUS_SILENCE_FRAME",
    "SUPPORTED_MODES",
    "DecryptError",
    "TransportDecryptor",
    "is_dave_frame",
]

SUPPORTED_MODES = ("aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize")

#: The last two bytes of every DAVE-encrypted media frame (DAVE protocol, "frame format").
DAVE_MAGIC_MARKER = b"\xfa\xfa"
#: The Opus frame Discord clients send (unencrypted, even under DAVE) when they stop talking.
OPUS_SILENCE_FRAME = b"\xf8\xff\xfe"

_NONCE_COUNTER = 4
_TAG = 16
_KEY = 32


class DecryptError(ValueError):
    """A datagram could not be decrypted: malformed, truncated or not authentic."""


def is_dave_frame(frame: bytes) -> bool:
    """Whether ``frame`` ends like a DAVE-encrypted frame (supplemental data + 0xFAFA).

    The check is the protocol's own: the magic marker, and a supplemental-data size
    byte before it that fits inside the frame. An Opus frame may end the same way by
    chance (about 1 in 65 536), so this is a hint for counting, never a gate on audio.
    """
    if len(frame) < 3 or frame[-2:] != DAVE_MAGIC_MARKER:
        return False
    supplemental = frame[-3]
    return 11 <= supplemental <= len(frame)


class TransportDecryptor:
    """Decrypts Discord voice datagrams for one negotiated mode and session key.

    Args:
        mode: One of :data:`SUPPORTED_MODES`, as chosen in SELECT_PROTOCOL and
            confirmed by SESSION_DESCRIPTION.
        secret_key: The 32-byte key from SESSION_DESCRIPTION (a list of ints there;
            pass ``bytes(...)``).

    Raises:
        ValueError: Unknown mode or a key that is not 32 bytes.
        ImportError: The cipher's library is missing (PyNaCl for XChaCha20, which
            ``discord.py[voice]`` brings; ``cryptography`` for AES-256-GCM).
    """

    def __init__(self, mode: str, secret_key: bytes) -> None:
        if mode not in SUPPORTED_MODES:
            raise ValueError(f"unsupported Discord voice encryption mode {mode!r}; supported: {', '.join(SUPPORTED_MODES)}")
        key = bytes(secret_key)
        if len(key) != _KEY:
            raise ValueError(f"secret_key must be {_KEY} bytes, got {len(key)}")
        self.mode = mode
        if mode == "aead_xchacha20_poly1305_rtpsize":
            try:
                from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
                from nacl.exceptions import CryptoError
            except ImportError as exc:  # pragma: no cover - discord.py[voice] brings it
                raise ImportError("PyNaCl is needed for Discord voice: pip install 'polyvox[discord]'") from exc

            def open_box(ciphertext: bytes, aad: bytes, counter: bytes) -> bytes:
                nonce = counter + bytes(24 - _NONCE_COUNTER)
                try:
                    return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
                except CryptoError as err:
                    raise DecryptError("authentication failed") from err

        else:
            try:
                from cryptography.exceptions import InvalidTag
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "cryptography is needed for aead_aes256_gcm_rtpsize: pip install 'polyvox[discord]'"
                ) from exc
            cipher = AESGCM(key)

            def open_box(ciphertext: bytes, aad: bytes, counter: bytes) -> bytes:
                nonce = counter + bytes(12 - _NONCE_COUNTER)
                try:
                    return cipher.decrypt(nonce, ciphertext, aad)
                except InvalidTag as err:
                    raise DecryptError("authentication failed") from err

        self._open = open_box

    def decrypt(self, packet: bytes) -> RtpPacket:
        """Authenticate and decrypt one datagram.

        Args:
            packet: The datagram as received from the voice UDP socket.

        Returns:
            The RTP packet with ``payload`` = the decrypted media frame (Opus, or a
            DAVE frame) and ``extension_data`` = the decrypted extension body.

        Raises:
            DecryptError: The datagram is not RTP, too short, fails authentication,
                or its extension/padding lengths do not fit the plaintext.
        """
        data = bytes(packet)
        try:
            aad_size = rtp_header_size(data)
        except RtpError as exc:
            raise DecryptError(str(exc)) from exc
        if len(data) < aad_size + _TAG + _NONCE_COUNTER:
            raise DecryptError(f"datagram too short for its cipher: {len(data)} bytes")
        aad = data[:aad_size]
        plaintext = self._open(data[aad_size:-_NONCE_COUNTER], aad, data[-_NONCE_COUNTER:])

        first = data[0]
        profile: int | None = None
        extension_data = b""
        if first & 0x10:
            profile, words = struct.unpack_from(">HH", data, aad_size - 4)
            body = 4 * words
            if body > len(plaintext):
                raise DecryptError("extension body longer than the decrypted payload")
            extension_data, plaintext = plaintext[:body], plaintext[body:]
        try:
            return packet_from_parts(data, profile, extension_data, plaintext)
        except RtpError as exc:
            raise DecryptError(str(exc)) from exc
