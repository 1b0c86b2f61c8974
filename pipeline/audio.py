"""Reading, writing and converting PCM audio, outside the pipeline.

Everything here is frame-free and synchronous. Audio inside polyvox is a 1-D
``numpy.int16`` array of mono samples with its sample rate carried alongside (see
:mod:`pipeline.engines.base`); these helpers get audio into and out of that shape:

* :func:`load_audio` decodes any file ffmpeg can read (wav, mp3, ogg, flac, m4a,
  webm, ...) to mono int16 at the rate asked for. PCM and float WAV files are read
  with the standard library, without spawning ffmpeg. Decoding is capped by total
  samples (duration × rate × channels), checked from the header first and enforced
  while ffmpeg's output streams in, so a small file cannot decode into gigabytes.
* :func:`resample`, :func:`to_mono_int16`, :func:`float_to_int16` and
  :func:`int16_to_float` convert between rates, layouts and sample types.
* :func:`write_wav` writes mono int16 WAV files; :func:`rms_dbfs` measures level.

Example:
    >>> pcm = load_audio("enroll.mp3", sample_rate=16000)
    >>> write_wav("out/enroll.wav", pcm, 16000)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from pipeline.errors import AudioInputError, EngineError

__all__ = [
    "MAX_SAMPLES_PER_SECOND",
    "float_to_int16",
    "int16_to_float",
    "load_audio",
    "resample",
    "rms_dbfs",
    "to_mono_int16",
    "write_wav",
]

#: Quality recipe for :func:`resample`: soxr's "high quality" (20-bit precision),
#: transparent for speech and fast enough to run on every utterance.
_SOXR_QUALITY = "HQ"

#: Frames converted per step in :func:`to_mono_int16`, so a long multi-channel file
#: never needs a float copy of itself in memory at once.
_BLOCK_FRAMES = 1 << 18

#: Seconds the ffprobe call may take; it reads headers only, so anything longer
#: means a pathological input.
_PROBE_TIMEOUT_S = 60.0

#: Default cap on decoded samples per second of ``max_seconds``, all channels counted:
#: 8 channels at 48 kHz (7.1 film audio, or stereo at 192 kHz). A 499 KB FLAC of
#: 299 s × 8 channels × 384 kHz holds 918 million samples, 8× what this allows for
#: 299 s; without a cap, decoding it took 5.3 GB of memory.
MAX_SAMPLES_PER_SECOND = 8 * 48000

#: Bytes of ffmpeg output handled per step: memory while decoding is this plus the
#: mono result at the rate asked for, whatever the file's rate and channel count.
_DECODE_CHUNK_BYTES = 1 << 20
#: ffmpeg decodes far faster than real time; a decode that takes longer than this
#: plus a tenth of the longest audio allowed is stuck (a pathological file).
_DECODE_TIMEOUT_BASE_S = 60.0

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
#: KSDATAFORMAT_SUBTYPE_* GUIDs (as stored, little-endian) → the plain format tag.
_EXTENSIBLE_SUBFORMATS = {
    bytes.fromhex("0100000000001000800000aa00389b71"): _WAVE_FORMAT_PCM,
    bytes.fromhex("0300000000001000800000aa00389b71"): _WAVE_FORMAT_IEEE_FLOAT,
}

_MiB = 2**20


# --------------------------------------------------------------------------- loading


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    max_bytes: int = 500 * _MiB,
    max_seconds: float = 4 * 3600,
    max_samples: int | None = None,
) -> np.ndarray:
    """Decode an audio file to mono 16-bit PCM at ``sample_rate``.

    Any sample rate, channel count and sample width is accepted: channels are
    averaged and the result is resampled with soxr. Integer PCM and float WAV
    (including ``WAVE_FORMAT_EXTENSIBLE``, as ffmpeg writes for 24-bit) are read
    with the standard library, whatever the file's name; everything else (mp3,
    ogg/vorbis, ogg/opus, flac, m4a, webm, µ-law WAV, ...) is decoded by ffmpeg,
    which must be on ``PATH``; its output is read as it streams in, downmixed and
    resampled piece by piece, so memory holds little more than the result.

    Decoding is capped by total samples, every channel counted: a file whose header
    says it holds more than ``max_samples`` is refused before decoding, and a decode
    that passes the cap anyway (a header that understates) is stopped there.

    Args:
        path: The file to read.
        sample_rate: The sample rate of the returned samples, in Hz.
        max_bytes: Refuse files larger than this many bytes.
        max_seconds: Refuse audio longer than this many seconds.
        max_samples: Refuse audio that decodes to more samples than this (duration ×
            rate × channels); default ``max_seconds`` × :data:`MAX_SAMPLES_PER_SECOND`.

    Returns:
        A 1-D ``numpy.int16`` array of mono samples at ``sample_rate``.

    Raises:
        AudioInputError: The file is missing, a directory, empty, too large, not
            audio, corrupt, has no samples, is longer than ``max_seconds``, decodes to
            more than ``max_samples``, or needs ffmpeg and ffmpeg is not installed.
            The message is one line naming the file.
        ValueError: ``sample_rate``, ``max_bytes``, ``max_seconds`` or ``max_samples``
            is not positive.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_bytes <= 0 or max_seconds <= 0:
        raise ValueError("max_bytes and max_seconds must be positive")
    if max_samples is None:
        max_samples = int(max_seconds * MAX_SAMPLES_PER_SECOND)
    if max_samples <= 0:
        raise ValueError("max_samples must be positive")

    path = Path(path)
    name = _display_name(path)
    size = _check_file(path, name, max_bytes)
    limits = _Limits(max_seconds, max_samples)

    decoded = _read_plain_wav(path, name, size, limits)
    if decoded is not None:
        pcm, rate = decoded
        _check_length(name, pcm, rate, max_seconds)
        return resample(pcm, rate, sample_rate)
    # ffmpeg's output is resampled as it arrives; its length is checked there too.
    pcm, rate = _decode_with_ffmpeg(path, name, limits, sample_rate)
    _check_length(name, pcm, rate, max_seconds)
    return pcm


class _Limits:
    """What a decode may produce: seconds, and samples with every channel counted."""

    def __init__(self, max_seconds: float, max_samples: int) -> None:
        self.max_seconds = max_seconds
        self.max_samples = max_samples

    def check_header(self, name: str, seconds: float, rate: int, channels: int) -> None:
        """Refuse what a header promises before anything is decoded (NaN: unknown)."""
        if seconds > self.max_seconds:  # NaN compares False
            raise AudioInputError(_too_long(name, seconds, self.max_seconds))
        if seconds * rate * channels > self.max_samples:
            raise AudioInputError(_too_many_samples(name, seconds, rate, channels, self.max_samples))


def _check_length(name: str, pcm: np.ndarray, rate: int, max_seconds: float) -> None:
    if pcm.size == 0:
        raise AudioInputError(f"{name}: contains no audio samples")
    seconds = pcm.size / rate
    if seconds > max_seconds:
        raise AudioInputError(_too_long(name, seconds, max_seconds))


def _display_name(path: Path) -> str:
    # The path as the caller gave it (what the user typed), kept to one line.
    text = os.fsdecode(path)
    return text.replace("\r", "\\r").replace("\n", "\\n") or "''"


def _too_long(name: str, seconds: float, max_seconds: float) -> str:
    return (
        f"{name}: audio is too long ({_format_duration(seconds)}; "
        f"the limit is {_format_duration(max_seconds)})"
    )


def _too_many_samples(name: str, seconds: float | None, rate: int, channels: int, max_samples: int) -> str:
    size = f"{_format_duration(seconds)} × " if seconds is not None else ""
    return (
        f"{name}: too much audio data to decode ({size}{channels} channels × {rate} Hz; "
        f"the limit is {max_samples / 1e6:.1f} million samples)"
    )


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d} min"


def _format_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < _MiB:
        return f"{count / 1024:.1f} KiB"
    return f"{count / _MiB:.1f} MiB"


def _check_file(path: Path, name: str, max_bytes: int) -> int:
    """Stat ``path`` and refuse what cannot be an audio file; returns its size."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AudioInputError(f"{name}: file not found") from None
    except OSError as exc:
        raise AudioInputError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioInputError(f"{name}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioInputError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise AudioInputError(f"{name}: file is empty (0 bytes)")
    if info.st_size > max_bytes:
        raise AudioInputError(
            f"{name}: file is too large ({_format_bytes(info.st_size)}; "
            f"the limit is {_format_bytes(max_bytes)})"
        )
    if not os.access(path, os.R_OK):
        raise AudioInputError(f"{name}: cannot read file (permission denied)")
    return info.st_size


class _WaveReader(wave.Wave_read):
    """``wave.Wave_read`` that also reads ``WAVE_FORMAT_EXTENSIBLE`` and float WAV.

    Python 3.11's reader refuses the extensible header, which ffmpeg and most
    recorders write for 24-bit or multi-channel PCM (Python 3.12 accepts it), and
    IEEE float samples, which scipy and DAWs write. Both are still plain samples,
    read here without starting an ffmpeg process. A block alignment that does not match
    the sample width (e.g. 20-bit samples padded to 4 bytes), which the stdlib reader
    would silently misread, is refused so that such files go to ffmpeg.

    Attributes:
        is_float: Whether the samples are IEEE float (4 or 8 bytes) rather than integers.
    """

    is_float: bool = False

    def _read_fmt_chunk(self, chunk: BinaryIO) -> None:
        header = chunk.read(16)
        if len(header) < 16:
            raise EOFError
        tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHLLHH", header)
        if tag == _WAVE_FORMAT_EXTENSIBLE:
            extension = chunk.read(24)
            if len(extension) < 24:
                raise EOFError
            tag = _EXTENSIBLE_SUBFORMATS.get(extension[8:24], -1)
        if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_IEEE_FLOAT):
            raise wave.Error(f"not a PCM or float WAV (format {tag:#06x})")
        self.is_float = tag == _WAVE_FORMAT_IEEE_FLOAT
        width = (bits + 7) // 8
        if not channels or not rate or width not in ((4, 8) if self.is_float else (1, 2, 3, 4)):
            raise wave.Error("bad channel count, sample width or sample rate")
        if block_align != channels * width:
            raise wave.Error("block alignment does not match the sample width")
        # The attributes Wave_read's other methods read.
        self._nchannels = channels
        self._framerate = rate
        self._sampwidth = width
        self._framesize = channels * width
        self._comptype = "NONE"
        self._compname = "not compressed"


def _read_plain_wav(
    path: Path, name: str, size: int, limits: _Limits
) -> tuple[np.ndarray, int] | None:
    """Read an integer-PCM or float WAV file with the standard library.

    Returns ``None`` (let ffmpeg try) for anything else, whatever the file is named.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            file.seek(0)
            with _WaveReader(file) as reader:
                channels = reader.getnchannels()
                width = reader.getsampwidth()
                rate = reader.getframerate()
                is_float = reader.is_float
                # Streaming writers leave the data size at 0 or 0xFFFFFFFF; never
                # trust it past the end of the file.
                frames = min(reader.getnframes(), size // (channels * width))
                limits.check_header(name, frames / rate, rate, channels)
                data = reader.readframes(frames)
    except (wave.Error, EOFError, struct.error, RuntimeError):
        # RuntimeError: the stdlib's chunk reader raises it for a chunk size that
        # points past the end of the file.
        return None
    except OSError as exc:
        raise AudioInputError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    data = data[: len(data) - len(data) % (channels * width)]  # a file cut mid-frame
    if not data:
        # A header claiming no frames: ffmpeg is more forgiving of broken writers.
        return None
    if is_float:
        values = np.frombuffer(data, dtype=f"<f{width}").reshape(-1, channels)
        return float_to_int16(values.mean(axis=1)), rate
    return to_mono_int16(data, channels, width), rate


def _decode_with_ffmpeg(
    path: Path, name: str, limits: _Limits, sample_rate: int
) -> tuple[np.ndarray, int]:
    """Decode ``path`` with ffmpeg to mono at ``sample_rate``, after a cheap ffprobe look."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioInputError(
            f"{name}: decoding this file needs ffmpeg, which is not installed "
            "(install it, e.g. `apt-get install ffmpeg`)"
        )
    # An absolute path: ffmpeg would take "name:rest" as a protocol, and "-x" as an option.
    source = str(path.resolve())

    probe = _probe(source, path, name)
    audio = [s for s in probe.get("streams") or [] if s.get("codec_type") == "audio"]
    if not audio or not audio[0].get("codec_name"):
        container = (probe.get("format") or {}).get("format_name", "unknown")
        raise AudioInputError(
            f"{name}: not a readable audio file (ffmpeg sees a '{container}' file "
            "with no audio stream)"
        )
    stream = audio[0]
    rate = _positive_int(stream.get("sample_rate"))
    channels = _positive_int(stream.get("channels"))
    if rate is None or channels is None:
        raise AudioInputError(_not_audio(path, name, "no sample rate or channel count"))
    duration = _seconds(stream.get("duration"))
    if duration != duration:  # NaN: the stream does not say; the container may
        duration = _seconds((probe.get("format") or {}).get("duration"))
    limits.check_header(name, duration, rate, channels)
    return _stream_ffmpeg(source, path, name, limits, rate, channels, sample_rate), sample_rate


def _positive_int(value: object) -> int | None:
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number > 0 else None


def _seconds(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return float("nan")


def _stream_ffmpeg(
    source: str, path: Path, name: str, limits: _Limits, rate: int, channels: int, sample_rate: int
) -> np.ndarray:
    """Run ffmpeg on the first audio stream and turn its output into mono at ``sample_rate``.

    ffmpeg writes 16-bit samples at the stream's own rate and channel count (asked for
    explicitly, so a stream that changes them midway is converted, not misread). They
    are read a chunk at a time, averaged to mono and resampled with a streaming soxr
    resampler; decoding stops as soon as the output passes ``max_seconds`` or
    ``max_samples``, whatever the header said.
    """
    command = [
        "ffmpeg", "-v", "error", "-nostdin", "-i", source,
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", str(channels), "-ar", str(rate), "-f", "s16le", "-acodec", "pcm_s16le", "-",
    ]  # fmt: skip
    frame_bytes = 2 * channels
    max_frames = int(limits.max_seconds * rate) + 1
    max_bytes = min(max_frames * frame_bytes, 2 * limits.max_samples + frame_bytes)
    resampler = (
        soxr.ResampleStream(rate, sample_rate, 1, dtype="int16", quality=_SOXR_QUALITY)
        if rate != sample_rate
        else None
    )
    parts: list[np.ndarray] = []
    received = 0
    pending = b""
    stopped: str | None = None
    with tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        except OSError as exc:
            raise AudioInputError(f"{name}: cannot run ffmpeg ({exc.strerror or exc})") from None
        timeout = _DECODE_TIMEOUT_BASE_S + limits.max_seconds / 10
        fired = threading.Event()

        def stop_stuck_decode() -> None:
            fired.set()
            process.kill()

        timer = threading.Timer(timeout, stop_stuck_decode)
        timer.daemon = True
        timer.start()
        try:
            assert process.stdout is not None
            while chunk := process.stdout.read(_DECODE_CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    stopped = "samples" if received > 2 * limits.max_samples else "seconds"
                    break
                data = pending + chunk
                usable = len(data) - len(data) % frame_bytes
                pending = data[usable:]
                mono = to_mono_int16(data[:usable], channels, 2)
                parts.append(resampler.resample_chunk(mono) if resampler is not None else mono)
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
            returncode = process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if stopped == "samples":
            raise AudioInputError(_too_many_samples(name, None, rate, channels, limits.max_samples))
        if stopped == "seconds":
            raise AudioInputError(
                f"{name}: audio is too long (more than the limit of "
                f"{_format_duration(limits.max_seconds)})"
            )
        if fired.is_set():
            raise AudioInputError(_not_audio(path, name, f"decoding took over {timeout:.0f} s"))
        if returncode != 0:
            stderr.seek(0)
            reason = _last_line(stderr.read().decode("utf-8", "replace"), source)
            raise AudioInputError(_not_audio(path, name, reason))
    if resampler is not None:
        parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def _probe(source: str, path: Path, name: str) -> dict:
    command = [
        "ffprobe", "-v", "error", "-of", "json",
        "-show_entries",
        "format=format_name,duration:stream=codec_type,codec_name,sample_rate,channels,duration",
        source,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AudioInputError(_not_audio(path, name, "ffprobe timed out")) from None
    except OSError as exc:
        raise AudioInputError(f"{name}: cannot run ffprobe ({exc.strerror or exc})") from None
    reason = _last_line(done.stderr.decode("utf-8", "replace"), source)
    if done.returncode != 0:
        raise AudioInputError(_not_audio(path, name, reason))
    try:
        info = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        raise AudioInputError(_not_audio(path, name, reason)) from None
    return info if isinstance(info, dict) else {}


def _last_line(text: str, source: str) -> str:
    """The last non-empty line of ffmpeg's chatter: the one that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1].replace(source, "").strip(" :")
    return line[:200]


#: First bytes of common formats, to say what a file that would not decode looked like.
_SIGNATURES: Sequence[tuple[int, bytes, str]] = (
    (0, b"RIFF", "a RIFF/WAV file"),
    (0, b"ID3", "an MP3 file"),
    (0, b"OggS", "an Ogg file"),
    (0, b"fLaC", "a FLAC file"),
    (0, b"\x1aE\xdf\xa3", "a WebM/Matroska file"),
    (4, b"ftyp", "an MP4/M4A file"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"\x1f\x8b", "a gzip archive"),
)


def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        return ""
    for offset, magic, what in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "an MP3/AAC stream"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by the 512-byte read is still text.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return "binary data of no known audio format"
        text = head[: exc.start].decode("utf-8")
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "text"
    return "binary data of no known audio format"


def _not_audio(path: Path, name: str, reason: str) -> str:
    looks = _sniff(path)
    details = [f"looks like {looks}"] if looks else []
    details.append(f"ffmpeg: {reason}" if reason else "ffmpeg could not decode it")
    return f"{name}: not a readable audio file ({'; '.join(details)})"


# ------------------------------------------------------------------------ conversion


def to_mono_int16(
    samples: bytes | bytearray | memoryview | np.ndarray,
    channels: int,
    sample_width: int,
    *,
    unsigned_8bit: bool = True,
) -> np.ndarray:
    """Convert interleaved little-endian integer PCM to mono int16.

    Channels are averaged; 24- and 32-bit samples keep their precision until the
    final rounding to 16 bits.

    Args:
        samples: Interleaved PCM as bytes, or an array whose buffer holds it.
        channels: Number of interleaved channels (1 or more).
        sample_width: Bytes per sample: 1, 2, 3 or 4.
        unsigned_8bit: Whether 8-bit samples are unsigned, offset by 128 (the WAV
            convention). Signed 8-bit samples (as pydub hands back): pass ``False``.

    Returns:
        A 1-D ``numpy.int16`` array with one sample per frame. A trailing partial
        frame is dropped.

    Raises:
        ValueError: ``channels`` or ``sample_width`` is out of range.
    """
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if sample_width not in (1, 2, 3, 4):
        raise ValueError(f"sample_width must be 1, 2, 3 or 4 bytes, got {sample_width}")
    if isinstance(samples, np.ndarray):
        raw = np.ascontiguousarray(samples).reshape(-1).view(np.uint8)
    else:
        raw = np.frombuffer(samples, dtype=np.uint8)
    frame_bytes = channels * sample_width
    frames = raw.size // frame_bytes
    raw = raw[: frames * frame_bytes]

    if sample_width == 2 and channels == 1:
        return raw.view("<i2").astype(np.int16)  # copy: the caller's buffer may go away

    out = np.empty(frames, dtype=np.int16)
    for start in range(0, frames, _BLOCK_FRAMES):
        stop = min(start + _BLOCK_FRAMES, frames)
        block = raw[start * frame_bytes : stop * frame_bytes]
        values = _int16_scaled(block, sample_width, unsigned_8bit).reshape(-1, channels)
        mono = values.mean(axis=1) if channels > 1 else values[:, 0]
        out[start:stop] = np.clip(np.rint(mono), -32768, 32767)
    return out


def _int16_scaled(block: np.ndarray, sample_width: int, unsigned_8bit: bool) -> np.ndarray:
    """Samples of ``block`` (raw bytes) as float64 in int16 units."""
    if sample_width == 1:
        if unsigned_8bit:
            return (block.astype(np.float64) - 128.0) * 256.0
        return block.view(np.int8).astype(np.float64) * 256.0
    if sample_width == 2:
        return block.view("<i2").astype(np.float64)
    if sample_width == 3:
        triplets = block.reshape(-1, 3).astype(np.int32)
        # Put the 24 bits in the top of an int32 so the sign comes along.
        value = (triplets[:, 0] << 8) | (triplets[:, 1] << 16) | (triplets[:, 2] << 24)
        return value.astype(np.float64) / 65536.0
    return block.view("<i4").astype(np.float64) / 65536.0


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono int16 PCM with soxr (high quality).

    Args:
        pcm: 1-D ``numpy.int16`` samples.
        from_rate: Their sample rate, in Hz.
        to_rate: The sample rate wanted, in Hz.

    Returns:
        A 1-D ``numpy.int16`` array at ``to_rate`` (``pcm`` itself when the rates match).

    Raises:
        ValueError: ``pcm`` is not 1-D int16, or a rate is not positive.
    """
    _require_mono_int16(pcm, "resample")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return pcm
    if pcm.size == 0:
        return np.zeros(0, dtype=np.int16)
    # soxr works in float inside and clips on the way back to int16.
    return np.asarray(soxr.resample(pcm, from_rate, to_rate, quality=_SOXR_QUALITY), np.int16)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Convert float samples in [-1, 1] to int16, clipping what lies outside.

    The inverse of :func:`int16_to_float`: a value ``v`` maps to ``round(v * 32768)``,
    so int16 → float → int16 is exact.

    Args:
        samples: Float samples, full scale 1.0.

    Returns:
        ``numpy.int16`` samples of the same shape.
    """
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def int16_to_float(pcm: np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Convert int16 samples to floats in [-1, 1).

    Args:
        pcm: ``numpy.int16`` samples.
        dtype: The float type wanted.

    Returns:
        ``pcm / 32768`` as ``dtype``, same shape.
    """
    return np.asarray(pcm, dtype=np.int16).astype(dtype) / dtype(32768.0)


def mono_float32(pcm: np.ndarray, who: str) -> np.ndarray:
    """1-D float32 samples in [-1, 1] from int16 (or float) audio given to an engine.

    Args:
        pcm: Mono samples, ``numpy.int16`` or floats (clipped to [-1, 1]).
        who: The engine, for the error message ("NeMo ASR", "Whisper").

    Raises:
        EngineError: not 1-D, or neither int16 nor float (not retryable).
    """
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise EngineError(f"{who} needs mono 1-D audio, got shape {array.shape}", retryable=False)
    if array.dtype == np.int16:
        return int16_to_float(array)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), -1.0, 1.0)
    raise EngineError(f"{who} needs int16 or float audio, got {array.dtype}", retryable=False)


def rms_dbfs(pcm: np.ndarray) -> float:
    """Level of ``pcm`` as RMS relative to full scale, in dB.

    Integer samples are measured against their type's full scale (32768 for int16),
    floats against 1.0. A full-scale sine measures about -3.01 dBFS.

    Args:
        pcm: Samples, integer or float.

    Returns:
        The level in dBFS; ``-inf`` for silence or no samples.
    """
    pcm = np.asarray(pcm)
    if pcm.size == 0:
        return float("-inf")
    values = pcm.astype(np.float64)
    if pcm.dtype.kind == "i":
        full_scale = -float(np.iinfo(pcm.dtype).min)
    elif pcm.dtype.kind == "u":  # unsigned PCM sits around the middle of its range
        full_scale = (float(np.iinfo(pcm.dtype).max) + 1) / 2
        values -= full_scale
    else:
        full_scale = 1.0
    rms = float(np.sqrt(np.mean(np.square(values))))
    if rms == 0.0:
        return float("-inf")
    return 20.0 * float(np.log10(rms / full_scale))


# ------------------------------------------------------------------------- writing


def write_wav(path: str | os.PathLike[str], pcm: np.ndarray, sample_rate: int) -> None:
    """Write mono int16 samples as a 16-bit PCM WAV file.

    Parent folders are created. The file is written beside its destination and
    moved into place, so a reader never sees half a file; it gets the usual mode of a
    new file (0644 under the common umask 022), not the temporary file's private 0600.

    Args:
        path: Where to write.
        pcm: 1-D ``numpy.int16`` samples (use :func:`float_to_int16` for floats).
        sample_rate: Their sample rate, in Hz.

    Raises:
        ValueError: ``pcm`` is not 1-D int16, or ``sample_rate`` is not positive.
    """
    _require_mono_int16(pcm, "write_wav")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file, wave.open(file, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(int(sample_rate))
            writer.writeframes(pcm.astype("<i2", copy=False).tobytes())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it to read it,
    which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _require_mono_int16(pcm: np.ndarray, where: str) -> None:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
        shape = getattr(pcm, "shape", None)
        dtype = getattr(pcm, "dtype", type(pcm).__name__)
        raise ValueError(
            f"{where} expects a 1-D numpy.int16 array, got dtype {dtype} shape {shape}"
        )
