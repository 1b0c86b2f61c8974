"""Discord voice test helpers: packets from discord.py's own sending path, a fake clock.

:class:`DiscordSender` drives ``discord.VoiceClient.send_audio_packet`` — discord.py's
real Opus encoder, RTP header and transport encryption — on a VoiceClient that has
no network: its connection state is a plain namespace whose ``send_packet`` collects
the datagrams. discord.py 2.7.1 implements only ``aead_xchacha20_poly1305_rtpsize``
of the two modes Discord still offers; for ``aead_aes256_gcm_rtpsize`` the cipher
step is :func:`encrypt_aes256_gcm_rtpsize` below (written from Discord's
documentation), plugged into the same path.
"""

from __future__ import annotations

import struct
import types

import discord
import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from discord import opus
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

from pipeline.audio import resample

MODES = ("aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize")
KEY = bytes(range(100, 132))

opus._load_default()


def encrypt_aes256_gcm_rtpsize(key: bytes, header: bytes, payload: bytes, counter: int) -> bytes:
    """One datagram in aead_aes256_gcm_rtpsize: header | AES-GCM(payload) | 4-byte counter."""
    nonce = struct.pack(">I", counter)
    return bytes(header) + AESGCM(key).encrypt(nonce + bytes(8), bytes(payload), bytes(header)) + nonce


def encrypt_rtpsize(mode: str, key: bytes, header: bytes, body: bytes, counter: int) -> bytes:
    """Encrypt ``body`` (extension body + payload) after the clear ``header`` in ``mode``."""
    if mode == "aead_aes256_gcm_rtpsize":
        return encrypt_aes256_gcm_rtpsize(key, header, body, counter)
    nonce = struct.pack(">I", counter)
    return bytes(header) + crypto_aead_xchacha20poly1305_ietf_encrypt(body, header, nonce + bytes(20), key) + nonce


class DiscordSender:
    """One Discord participant's outgoing stream, built by discord.py's VoiceClient."""

    def __init__(self, mode: str, *, ssrc: int = 1234, key: bytes = KEY, sequence: int = 0) -> None:
        self.sent: list[bytes] = []
        vc = discord.VoiceClient.__new__(discord.VoiceClient)
        vc._connection = types.SimpleNamespace(
            dave_session=None,
            can_encrypt=False,
            ssrc=ssrc,
            mode=mode,
            secret_key=list(key),
            send_packet=self.sent.append,
        )
        vc.sequence = sequence
        vc.timestamp = 0
        vc._incr_nonce = 0
        vc.encoder = opus.Encoder()
        if mode == "aead_aes256_gcm_rtpsize":

            def encrypt(header: bytes, data: bytes) -> bytes:
                packet = encrypt_aes256_gcm_rtpsize(key, header, data, vc._incr_nonce)
                vc.checked_add("_incr_nonce", 1, 4294967295)
                return packet

            vc._encrypt_aead_aes256_gcm_rtpsize = encrypt
        self.voice_client = vc

    def send_pcm16k(self, pcm: np.ndarray) -> list[bytes]:
        """Send 16 kHz mono audio as discord.py would (48 kHz stereo, 20 ms frames)."""
        up = resample(pcm.astype(np.int16), 16000, 48000)
        frame = opus.Encoder.SAMPLES_PER_FRAME
        up = np.concatenate([up, np.zeros(-len(up) % frame, np.int16)])
        stereo = np.repeat(up, 2).tobytes()
        start = len(self.sent)
        for i in range(0, len(stereo), opus.Encoder.FRAME_SIZE):
            self.voice_client.send_audio_packet(stereo[i : i + opus.Encoder.FRAME_SIZE], encode=True)
        return self.sent[start:]


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class AudioSink:
    """Collects ``on_audio`` calls per user."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, user_id: int, pcm: bytes) -> None:
        self.calls.append((user_id, pcm))

    def pcm(self, user_id: int | None = None) -> np.ndarray:
        data = b"".join(p for u, p in self.calls if user_id is None or u == user_id)
        return np.frombuffer(data, dtype=np.int16)

    def users(self) -> set[int]:
        return {u for u, _ in self.calls}


def aligned_snr_db(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 800) -> tuple[float, int]:
    """SNR of ``decoded`` against ``reference`` after finding the codec delay (≤ ``max_lag``).

    Returns:
        (SNR in dB, lag in samples).
    """
    x = reference.astype(np.float64)
    y = decoded.astype(np.float64)
    probe = x[: min(len(x), 16000)]
    scores = [float(np.dot(probe[: len(y) - lag], y[lag : lag + len(probe)])) for lag in range(max_lag)]
    lag = int(np.argmax(scores))
    # The codec delay is not a whole number of 16 kHz samples: fit it as a blend of
    # the two neighbouring whole-sample lags (least squares; 2 coefficients, so it
    # can absorb a sub-sample delay and a gain, not a coding error).
    n = min(len(x), len(y) - lag - 1)
    xx = x[:n]
    basis = np.stack([y[lag : lag + n], y[lag + 1 : lag + 1 + n]], axis=1)
    coef, *_ = np.linalg.lstsq(basis, xx, rcond=None)
    noise = float(np.sum((xx - basis @ coef) ** 2))
    return 10 * np.log10(float(np.sum(xx**2)) / max(noise, 1e-9)), lag
