"""``polyvox translate`` as a user meets it: progress bars, an honest timing headline,
a warning when there was nothing to interpret, output files anyone may read.

The command runs in-process with fake engines (a tone is a word), so these are fast;
``tests/test_e2e_translate.py`` runs it on real speech with the offline engines.
"""

from __future__ import annotations

import json
import os
import stat
import sys

import numpy as np
import pytest
from loguru import logger

from bot.cli import latency_headline, main
from pipeline.audio import write_wav
from tests.fakes import fake_engines, silence, tone
from tests.test_imagine import drawer, picture  # noqa: F401 - drawer is a fixture (used by name)


@pytest.fixture(autouse=True)
def loguru_restored():
    """``main`` points loguru at the stderr of the moment (the test's captured stream,
    closed afterwards): point it back at the real one."""
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def fakes(monkeypatch):
    """translate's engines are the fakes (no model loads)."""
    monkeypatch.setattr("bot.app.load_engines", lambda settings, **_: fake_engines())


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_silence_only_input_is_a_warning_and_the_files_are_readable(tmp_path, capsys, fakes, umask_022):
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, silence(2.0), 16000)
    out, captions = tmp_path / "out" / "quiet.es.wav", tmp_path / "quiet.es.json"
    assert main(["translate", str(quiet), "--to", "es", "-o", str(out), "--captions", str(captions), "--no-progress"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"no speech found in {quiet}: {out} is empty" in warnings[0]
    assert mode(out) == 0o644 and mode(captions) == 0o644  # not the temporary file's 0600
    assert json.loads(captions.read_text())["utterances"] == []


def test_progress_bars_and_a_compute_headline_when_fed_fast(tmp_path, capsys, fakes, umask_022):
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.concatenate([silence(0.3), tone(440, 0.6), silence(0.6), tone(550, 0.6), silence(0.8)]), 16000)
    out = tmp_path / "talk.es.wav"
    assert main(["translate", str(talk), "--to", "es", "-o", str(out), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" not in err
    # Both bars reached the end: all of the input fed, all of it interpreted.
    assert "fed         100%" in err and "interpreted 100%" in err and "2 utterances" in err
    (headline,) = [line for line in err.splitlines() if "engine compute per utterance" in line]
    assert "ASR p50" in headline and "MT p50" in headline and "TTS to first audio p50" in headline
    assert "--realtime measures latency" in headline and "speech end" not in err
    assert mode(out) == 0o644


def test_at_real_time_pace_the_headline_is_latency(tmp_path, capsys, fakes):
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.concatenate([silence(0.2), tone(440, 0.5), silence(0.7)]), 16000)
    assert main(["translate", str(talk), "--to", "es", "-o", str(tmp_path / "o.wav"), "--realtime", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "speech end → first audio: p50" in err and "(real-time pace)" in err
    assert "engine compute" not in err and "fed  " not in err  # no bars when asked for none


def test_latency_headline_says_what_was_measured():
    latency = {
        "end_to_first_audio": {"n": 2, "p50": 17.4, "p95": 30.0, "mean": 20.0},
        "compute_asr": {"n": 2, "p50": 0.8, "p95": 0.9, "mean": 0.85},
        "compute_mt": {"n": 2, "p50": 0.05, "p95": 0.06, "mean": 0.05},
    }
    fast = latency_headline(latency, realtime=False)
    assert fast is not None and fast.startswith("engine compute per utterance: ASR p50 0.800 s, MT p50 0.050 s")
    assert "17.4" not in fast  # queueing is not latency
    assert latency_headline(latency, realtime=True) == "speech end → first audio: p50 17.400 s, p95 30.000 s (real-time pace)"
    assert latency_headline({}, realtime=False) is None and latency_headline({}, realtime=True) is None


def test_a_recording_that_asks_for_pictures_gets_them_beside_its_interpretation(tmp_path, capsys, monkeypatch, drawer):  # noqa: F811
    asked: list[tuple[str, ...]] = []

    def engines(settings, *, optional=(), **_):
        asked.append(tuple(optional))
        return fake_engines(image=drawer if "image" in optional else None)

    monkeypatch.setattr("bot.app.load_engines", engines)
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.concatenate([silence(0.3), tone(440, 0.6), silence(0.8), tone(550, 0.6), silence(0.8)]), 16000)
    out, captions = tmp_path / "talk.es.wav", tmp_path / "talk.es.json"
    argv = ["translate", str(talk), "--to", "es", "-o", str(out), "--captions", str(captions), "--no-progress"]

    assert main([*argv, "--set", "interpretation.images.trigger=tone"]) == 0
    document = json.loads(captions.read_text())
    # Both sentences start with the trigger: each is interpreted and drawn.
    assert len(document["utterances"]) == 2 and "image" in asked[-1]
    assert [(p["user_id"], p["caption"]) for p in document["pictures"]] == [("talk", "440"), ("talk", "550")]
    for number, shown in enumerate(document["pictures"], start=1):
        assert shown["file"] == str(tmp_path / f"talk.es.picture-{number}.png")
        assert picture((tmp_path / f"talk.es.picture-{number}.png").read_bytes()).size == (64, 64)
    assert "picture of “440” (talk" in capsys.readouterr().err

    # Without a trigger phrase no image model is loaded and nothing is drawn.
    assert main(argv) == 0
    assert "image" not in asked[-1] and json.loads(captions.read_text())["pictures"] == []
