"""End to end: `polyvox translate` on real recorded and synthesized English speech.

Offline profile, real engines (silero, RNNoise, pocketsphinx, Apertium, espeak-ng),
through the installed console script, as a user would run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest

from pipeline.audio import load_audio, rms_dbfs, write_wav
from pipeline.engines.mt.apertium import ApertiumMTEngine
from pipeline.text import normalize_for_wer
from tests.conftest import concat_with_silence

pytestmark = pytest.mark.slow


def polyvox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("polyvox")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def apertium():
    engine = ApertiumMTEngine()
    engine.load()
    yield engine
    engine.close()


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer([normalize_for_wer(r) for r in references], [normalize_for_wer(h) for h in hypotheses])


def check_run(tmp_path: Path, clips, apertium, *, input_name: str = "in.wav", convert: list[str] | None = None):
    """Translate the clips (as one recording) and check the outputs; returns the captions."""
    src = tmp_path / "in.wav"
    write_wav(src, concat_with_silence([c.pcm for c in clips]), 16000)
    if convert:  # re-encode to another container/rate/channel count with ffmpeg
        converted = tmp_path / input_name
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), *convert, str(converted)], check=True)
        src = converted
    out, captions = tmp_path / "out.wav", tmp_path / "captions.json"
    run = polyvox("translate", str(src), "--from", "en", "--to", "es", "-o", str(out), "--captions", str(captions))
    assert run.returncode == 0, run.stderr
    doc = json.loads(captions.read_text())
    utts = doc["utterances"]

    # one output per input utterance, in order
    assert len(utts) == len(clips), [u["transcript"] for u in utts]
    assert [u["start"] for u in utts] == sorted(u["start"] for u in utts)

    # the transcripts are right (WER against the reference transcripts)
    wer = corpus_wer([c.text for c in clips], [u["transcript"] for u in utts])
    assert wer <= 0.35, (wer, [u["transcript"] for u in utts])

    # the translation is Apertium's translation of that transcript
    for u in utts:
        assert u["translations"]["es"] == apertium.translate([u["transcript"]], "en", "es")[0]
        assert u["translations"]["es"].strip()

    # the Spanish audio: non-silent, plausible length, one piece per utterance
    speech = load_audio(out, sample_rate=16000)
    assert rms_dbfs(speech) > -35
    total = len(speech) / 16000
    spoken = sum(c.seconds for c in clips)
    assert 0.4 * spoken < total < 3.0 * spoken, (total, spoken)
    for u, clip in zip(utts, clips, strict=True):
        piece = u["output"]["end"] - u["output"]["start"]
        assert 0.3 * clip.seconds < piece < 4.0 * clip.seconds, (piece, clip.seconds)
        assert set(u["latency"]) >= {"asr", "mt", "tts_first", "end_to_first_audio"}
    return doc, wer


def test_real_recorded_speech(tmp_path, librivox, apertium):
    doc, wer = check_run(tmp_path, librivox, apertium)
    print(f"librivox WER {wer:.3f}; latency {doc['latency']['end_to_first_audio']}")


def test_flite_voices_as_mp3_at_44k_stereo(tmp_path, flite_speech, apertium):
    doc, wer = check_run(
        tmp_path, flite_speech, apertium, input_name="in.mp3", convert=["-ar", "44100", "-ac", "2"]
    )
    print(f"flite WER {wer:.3f}")


def test_two_speakers_interleaved(tmp_path, librivox):
    # alice speaks at 0.5 s and ~9 s; bob in between.
    a1, b1, a2 = librivox[1], librivox[2], librivox[4]
    gap = lambda s: np.zeros(int(s * 16000), dtype=np.int16)  # noqa: E731
    alice = np.concatenate([gap(0.5), a1.pcm, gap(1.5 + b1.seconds + 1.5), a2.pcm, gap(1.5)])
    bob = np.concatenate([gap(0.5 + a1.seconds + 1.5), b1.pcm, gap(1.5 + a2.seconds + 1.5)])
    write_wav(tmp_path / "alice.wav", alice, 16000)
    write_wav(tmp_path / "bob.ogg.wav", bob, 16000)
    run = polyvox(
        "translate", str(tmp_path / "alice.wav"), str(tmp_path / "bob.ogg.wav"),
        "--to", "es", "-o", str(tmp_path / "out.wav"), "--captions", str(tmp_path / "c.json"),
    )
    assert run.returncode == 0, run.stderr
    utts = json.loads((tmp_path / "c.json").read_text())["utterances"]
    # Simultaneous mode may interpret a long sentence in several segments: group each
    # speaker's turn (consecutive segments of one speaker) back together.
    turns: list[tuple[str, str]] = []
    for u in utts:
        if turns and turns[-1][0] == u["user_id"]:
            turns[-1] = (u["user_id"], f"{turns[-1][1]} {u['transcript']}")
        else:
            turns.append((u["user_id"], u["transcript"]))
    assert [user for user, _ in turns] == ["alice", "bob.ogg", "alice"]
    for (_, transcript), clip in zip(turns, (a1, b1, a2), strict=True):
        assert corpus_wer([clip.text], [transcript]) <= 0.5


def test_silence_only_gives_no_utterances(tmp_path):
    write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, dtype=np.int16), 16000)
    run = polyvox("translate", str(tmp_path / "quiet.wav"), "--to", "es", "-o", str(tmp_path / "o.wav"),
                  "--captions", str(tmp_path / "c.json"))
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "c.json").read_text())["utterances"] == []
    assert "no speech found" in run.stderr


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("corrupt.wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 8, "corrupt.wav"),
        ("empty.wav", b"", "empty"),
        ("notes.mp3", b"these are my meeting notes, not audio\n" * 20, "notes.mp3"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    run = polyvox("translate", str(path), "--to", "es", "-o", str(tmp_path / "o.wav"))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("polyvox: error:") and expected in lines[0]
    assert not (tmp_path / "o.wav").exists()


def test_missing_input_file(tmp_path):
    run = polyvox("translate", str(tmp_path / "nope.wav"), "--to", "es", "-o", str(tmp_path / "o.wav"))
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "nope.wav" in run.stderr


def test_unsupported_language_pair(tmp_path, librivox):
    # espeak-ng speaks Japanese, but no Apertium pair (or pivot) reaches it.
    run = polyvox("translate", str(librivox[1].path), "--from", "en", "--to", "ja", "-o", str(tmp_path / "o.wav"))
    assert run.returncode == 2
    assert "en→ja" in run.stderr and "Traceback" not in run.stderr
