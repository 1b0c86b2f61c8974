"""Specification of pipeline.audio: decoding any audio file to mono int16, and the helpers.

Fixtures are generated: a sine written with the standard library, converted with the
ffmpeg command-line tool into each format under test.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import audio
from pipeline.audio import (
    float_to_int16,
    int16_to_float,
    load_audio,
    resample,
    rms_dbfs,
    to_mono_int16,
    write_wav,
)
from pipeline.errors import AudioInputError

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs the ffmpeg command-line tools",
)

TONE_HZ = 440.0
SECONDS = 2.0


def sine(rate: int, seconds: float = SECONDS, hz: float = TONE_HZ, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * hz * t)


def write_pcm16(path: Path, channels_data: list[np.ndarray], rate: int) -> Path:
    """Write float channels as an interleaved 16-bit PCM WAV with the stdlib."""
    interleaved = float_to_int16(np.stack(channels_data, axis=1)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels_data))
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(interleaved.tobytes())
    return path


def ffmpeg_convert(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(src), *args, str(dst)],
        check=True,
    )
    return dst


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.argmax(spectrum) * rate / pcm.size)


def assert_is_tone(pcm: np.ndarray, rate: int, seconds: float = SECONDS, slack_s: float = 0.0) -> None:
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(pcm.size - rate * seconds) <= 0.01 * rate * seconds + slack_s * rate, pcm.size
    assert abs(peak_hz(pcm, rate) - TONE_HZ) <= 5.0
    assert rms_dbfs(pcm) > -30.0  # a real signal, not near-silence


def assert_one_line_naming(exc: pytest.ExceptionInfo[AudioInputError], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message
    assert "Traceback" not in message
    assert path.name in message
    return message


@pytest.fixture
def stereo_source(tmp_path: Path) -> Path:
    """A 44.1 kHz stereo 16-bit WAV of the tone, the source for ffmpeg conversions."""
    tone = sine(44100)
    return write_pcm16(tmp_path / "source.wav", [tone, tone], 44100)


# ------------------------------------------------------------------- WAV, stdlib path


@pytest.mark.parametrize(
    ("rate", "channels"),
    [(8000, 2), (44100, 1), (16000, 1), (48000, 6)],
)
def test_pcm16_wav_any_rate_and_channels_becomes_16k_mono(
    tmp_path: Path, rate: int, channels: int
) -> None:
    tone = sine(rate)
    path = write_pcm16(tmp_path / "tone.wav", [tone] * channels, rate)

    pcm = load_audio(path)

    assert_is_tone(pcm, 16000)


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("s24.wav", "pcm_s24le"),  # ffmpeg writes WAVE_FORMAT_EXTENSIBLE for 24-bit
        ("s32.wav", "pcm_s32le"),
        ("u8.wav", "pcm_u8"),
        ("f32.wav", "pcm_f32le"),
        ("f64.wav", "pcm_f64le"),
    ],
)
def test_wav_sample_widths_are_read_without_ffmpeg(
    stereo_source: Path, name: str, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ffmpeg_convert(stereo_source, stereo_source.with_name(name), "-c:a", codec)

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("plain WAV must not spawn ffmpeg")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    pcm = load_audio(path)

    assert_is_tone(pcm, 16000)


def test_wav_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "actually-a-wav.mp3", [sine(22050)], 22050)

    assert_is_tone(load_audio(path), 16000)


def test_streaming_wav_header_with_unknown_length_is_read_to_end_of_file(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "stream.wav", [sine(16000)], 16000)
    data = bytearray(path.read_bytes())
    data_chunk = data.index(b"data")
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[data_chunk + 4 : data_chunk + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))

    assert_is_tone(load_audio(path), 16000)


@needs_ffmpeg
def test_wav_cut_mid_frame_drops_the_partial_frame(stereo_source: Path) -> None:
    path = ffmpeg_convert(stereo_source, stereo_source.with_name("f32.wav"), "-c:a", "pcm_f32le")
    path.write_bytes(path.read_bytes()[:-3])

    assert_is_tone(load_audio(path), 16000)


@settings(max_examples=300, deadline=None, database=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(12, 4000)),
    width=st.sampled_from([1, 2, 3, 4]),
)
def test_corrupt_wav_headers_only_ever_raise_audio_input_error(
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, int]],
    cut: int | None,
    width: int,
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(width)
        w.setframerate(16000)
        w.writeframes(bytes(range(256)) * 16)
    data = bytearray(path.read_bytes())
    for position, value in edits:
        data[position] = value
    path.write_bytes(bytes(data[:cut]))
    # Without ffmpeg whatever the stdlib reader refuses ends in a (one-line) AudioInputError.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audio.shutil, "which", lambda name: None)
        try:
            pcm = load_audio(path)
        except AudioInputError as exc:
            assert "\n" not in str(exc)
        else:
            assert pcm.dtype == np.int16 and pcm.ndim == 1


def test_channels_are_averaged(tmp_path: Path) -> None:
    tone = sine(16000)
    opposite = write_pcm16(tmp_path / "opposite.wav", [tone, -tone], 16000)
    one_sided = write_pcm16(tmp_path / "left.wav", [tone, np.zeros_like(tone)], 16000)
    both = write_pcm16(tmp_path / "both.wav", [tone, tone], 16000)

    assert rms_dbfs(load_audio(opposite)) == -math.inf
    half_level = rms_dbfs(load_audio(both)) - rms_dbfs(load_audio(one_sided))
    assert half_level == pytest.approx(20 * math.log10(2), abs=0.01)


@pytest.mark.parametrize("target", [8000, 16000, 24000, 48000])
def test_output_rate_is_the_one_asked_for(tmp_path: Path, target: int) -> None:
    path = write_pcm16(tmp_path / "tone.wav", [sine(44100)], 44100)

    assert_is_tone(load_audio(path, sample_rate=target), target)


# ------------------------------------------------------------- other formats, ffmpeg


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("tone.mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
        ("vorbis.ogg", ["-c:a", "libvorbis"]),
        ("opus.ogg", ["-c:a", "libopus", "-b:a", "64k"]),
        ("tone.opus", ["-c:a", "libopus"]),
        ("tone.flac", ["-c:a", "flac"]),
        ("s24.flac", ["-c:a", "flac", "-sample_fmt", "s32", "-bits_per_raw_sample", "24"]),
        ("tone.m4a", ["-c:a", "aac"]),
        ("tone.webm", ["-c:a", "libopus"]),
        ("mulaw.wav", ["-c:a", "pcm_mulaw"]),  # WAV, but not PCM: goes to ffmpeg
        ("mono8k.mp3", ["-ac", "1", "-ar", "8000"]),
    ],
)
def test_compressed_formats_round_trip(stereo_source: Path, name: str, args: list[str]) -> None:
    path = ffmpeg_convert(stereo_source, stereo_source.with_name(name), *args)

    # Codecs with fixed frames (AAC: 1024 samples) may pad the last one out with silence.
    assert_is_tone(load_audio(path), 16000, slack_s=1024 / 44100)


# ---------------------------------------------------------------------------- errors


def _random_wav(tmp_path: Path) -> Path:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    return path


def _text_mp3(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp3"
    path.write_text("These are meeting notes, not audio.\n" * 50)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.ogg"
    path.touch()
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.flac"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.wav"
    path.mkdir()
    return path


def _no_samples(tmp_path: Path) -> Path:
    return write_pcm16(tmp_path / "zero.wav", [np.zeros(0)], 16000)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_random_wav, "not a readable audio file", marks=needs_ffmpeg, id="random"),
        pytest.param(_text_mp3, "looks like text", marks=needs_ffmpeg, id="text"),
        pytest.param(_empty, "empty", id="empty"),
        pytest.param(_missing, "not found", id="missing"),
        pytest.param(_directory, "directory", id="directory"),
        pytest.param(_no_samples, "no audio samples", marks=needs_ffmpeg, id="no-samples"),
    ],
)
def test_unreadable_input_is_one_clear_line(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)

    with pytest.raises(AudioInputError) as exc:
        load_audio(path)

    assert expected in assert_one_line_naming(exc, path)
    assert exc.value.retryable is False


def test_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "big.wav", [sine(16000)], 16000)

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_bytes=1000)

    assert "too large" in assert_one_line_naming(exc, path)


def test_wav_over_max_seconds_is_refused(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "long.wav", [sine(16000)], 16000)

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_seconds=1.5)

    assert "too long" in assert_one_line_naming(exc, path)


@needs_ffmpeg
def test_compressed_over_max_seconds_is_refused(stereo_source: Path) -> None:
    path = ffmpeg_convert(stereo_source, stereo_source.with_name("long.ogg"))

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_seconds=1.5)

    assert "too long" in assert_one_line_naming(exc, path)


@needs_ffmpeg
def test_file_without_audio_stream_says_so(tmp_path: Path) -> None:
    path = tmp_path / "picture.mp3"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=c=red:s=16x16",
         "-frames:v", "1", "-f", "image2", "-c:v", "png", str(path)],
        check=True,
    )  # fmt: skip

    with pytest.raises(AudioInputError) as exc:
        load_audio(path)

    message = assert_one_line_naming(exc, path)
    assert "PNG" in message or "no audio stream" in message


@needs_ffmpeg
def test_missing_ffmpeg_is_reported_with_the_fix(
    stereo_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mp3 = ffmpeg_convert(stereo_source, stereo_source.with_name("tone.mp3"))
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)

    with pytest.raises(AudioInputError) as exc:
        load_audio(mp3)

    message = assert_one_line_naming(exc, mp3)
    assert "ffmpeg" in message and "install" in message
    # WAV needs no ffmpeg at all.
    assert_is_tone(load_audio(stereo_source), 16000)


# ----------------------------------------------------------------------- decode bombs


def _silence_flac(path: Path, seconds: float, *, piped: bool = False) -> Path:
    """A tiny FLAC of 8 channels × 384 kHz of silence; ``piped``: no length in its header."""
    command = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi",
               "-i", "anullsrc=r=384000:cl=7.1", "-t", str(seconds), "-c:a", "flac"]  # fmt: skip
    if piped:
        # Written to a pipe, the encoder cannot go back to fill in the sample count.
        with open(path, "wb") as out:
            subprocess.run([*command, "-f", "flac", "pipe:1"], stdout=out, check=True)
    else:
        subprocess.run([*command, str(path)], check=True)
    return path


@needs_ffmpeg
def test_a_decode_bomb_is_refused_from_its_header_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 s × 8 channels × 384 kHz: 31 million samples in a ~12 KB file.
    path = _silence_flac(tmp_path / "bomb.flac", 10)
    assert path.stat().st_size < 100_000

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header says enough: nothing may be decoded")

    monkeypatch.setattr(audio, "_stream_ffmpeg", no_decoding)
    with pytest.raises(AudioInputError) as exc:
        # The default cap for 60 s: 60 × 8 × 48,000 = 23 million samples.
        load_audio(path, max_seconds=60)

    message = assert_one_line_naming(exc, path)
    assert "too much audio data" in message and "8 channels × 384000 Hz" in message


@needs_ffmpeg
def test_a_bomb_whose_header_hides_its_length_is_stopped_while_decoding(tmp_path: Path) -> None:
    path = _silence_flac(tmp_path / "piped.flac", 4, piped=True)  # 12 million samples

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_seconds=60, max_samples=3_000_000)
    assert "too much audio data" in assert_one_line_naming(exc, path)

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_seconds=2, max_samples=10**9)
    assert "too long" in assert_one_line_naming(exc, path)

    # Within the caps the same file decodes, streamed, to mono at the rate asked for.
    pcm = load_audio(path, max_seconds=60, max_samples=13_000_000)
    assert pcm.dtype == np.int16 and abs(pcm.size - 4 * 16000) <= 16 and np.abs(pcm).max() <= 2


def test_a_wav_with_too_many_samples_is_refused_from_its_header(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "wide.wav", [sine(96000, 0.5)] * 8, 96000)  # 384,000 samples

    with pytest.raises(AudioInputError) as exc:
        load_audio(path, max_seconds=10, max_samples=300_000)

    assert "too much audio data" in assert_one_line_naming(exc, path)
    assert_is_tone(load_audio(path, max_seconds=10, max_samples=400_000), 16000, seconds=0.5)


def test_bad_arguments_are_programming_errors(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "tone.wav", [sine(16000)], 16000)

    with pytest.raises(ValueError):
        load_audio(path, sample_rate=0)
    with pytest.raises(ValueError):
        load_audio(path, max_samples=0)


# --------------------------------------------------------------------------- helpers


def test_write_wav_round_trips_exactly_and_creates_folders(tmp_path: Path) -> None:
    pcm = float_to_int16(sine(16000))
    path = tmp_path / "a" / "b" / "out.wav"

    write_wav(path, pcm, 16000)

    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
    np.testing.assert_array_equal(load_audio(path), pcm)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left


def test_write_wav_refuses_what_is_not_mono_int16(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_wav(tmp_path / "x.wav", sine(16000), 16000)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "x.wav", np.zeros((10, 2), np.int16), 16000)
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (16000, 48000), (44100, 16000)])
def test_resample_keeps_length_and_pitch(src: int, dst: int) -> None:
    out = resample(float_to_int16(sine(src)), src, dst)

    assert_is_tone(out, dst)


def test_resample_same_rate_and_empty_input() -> None:
    pcm = np.arange(10, dtype=np.int16)
    assert resample(pcm, 16000, 16000) is pcm
    assert resample(np.zeros(0, np.int16), 48000, 16000).dtype == np.int16
    with pytest.raises(ValueError):
        resample(pcm.astype(np.float32), 16000, 8000)


def test_resample_clips_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots after band-limiting (Gibbs ringing).
    square = np.tile(np.r_[np.full(20, 32767), np.full(20, -32768)], 400).astype(np.int16)

    out = resample(square, 48000, 16000)

    import soxr

    ideal = soxr.resample(int16_to_float(square, np.float64), 48000, 16000) * 32768
    assert np.abs(ideal).max() > 32768  # the ringing really is there
    clipped = np.clip(ideal, -32768, 32767)
    assert np.abs(out.astype(np.float64) - clipped).max() <= 2


def test_float_and_int16_convert_both_ways() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    np.testing.assert_array_equal(float_to_int16(int16_to_float(pcm)), pcm)
    np.testing.assert_array_equal(float_to_int16(np.array([-2.0, 2.0])), [-32768, 32767])
    assert int16_to_float(pcm).dtype == np.float32
    assert int16_to_float(pcm, np.float64)[0] == -1.0


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.zeros(100, np.int16)) == -math.inf
    assert rms_dbfs(np.zeros(0, np.int16)) == -math.inf
    assert rms_dbfs(float_to_int16(sine(16000, amp=1.0))) == pytest.approx(-3.01, abs=0.02)
    assert rms_dbfs(sine(16000, amp=0.5)) == pytest.approx(-9.03, abs=0.02)


def test_to_mono_int16_sample_widths() -> None:
    # 24-bit little-endian: +max, -1 (rounds to 0), min
    s24 = bytes.fromhex("ffff7f" + "ffffff" + "000080")
    np.testing.assert_array_equal(to_mono_int16(s24, 1, 3), [32767, 0, -32768])
    np.testing.assert_array_equal(to_mono_int16(bytes([0, 128, 255]), 1, 1), [-32768, 0, 32512])
    np.testing.assert_array_equal(
        to_mono_int16(np.array([-128, 0, 127], np.int8), 1, 1, unsigned_8bit=False),
        [-32768, 0, 32512],
    )
    s32 = np.array([2**31 - 1, -(2**31), 65536], dtype="<i4")
    np.testing.assert_array_equal(to_mono_int16(s32, 1, 4), [32767, -32768, 1])
    stereo = np.array([1000, 3000, -5, -5, 7], dtype="<i2")  # trailing half frame dropped
    np.testing.assert_array_equal(to_mono_int16(stereo, 2, 2), [2000, -5])
    with pytest.raises(ValueError):
        to_mono_int16(b"\0" * 10, 1, 5)


def test_module_exports() -> None:
    assert set(audio.__all__) == {
        "MAX_SAMPLES_PER_SECOND", "float_to_int16", "int16_to_float", "load_audio", "resample", "rms_dbfs",
        "to_mono_int16", "write_wav",
    }  # fmt: skip
