"""``bench/bench_gpu.py --smoke``: the GPU benchmark's whole harness, on the CPU with tiny models.

The numbers mean nothing here (a 2-core CPU, random tiny checkpoints); what is checked is
that every part ran, wrote its results as it went, and that the closing table has every
row with a measurement in it, so the same command on a GPU machine yields the table the
issue asks for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("nemo.collections.asr")
pytest.importorskip("ctranslate2")
pytest.importorskip("TTS.tts.models.xtts")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"-?\d+(?:\.\d+)?"
LABEL_WIDTH = 52


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict], Path]:
    from tests.tiny_models import build_tiny_nemo_asr, build_tiny_nllb, shared_checkpoint
    from tests.tiny_xtts import write_tiny_xtts

    # The suite's tiny checkpoints, built once per session whoever needs them first.
    base = tmp_path_factory.getbasetemp()
    checkpoints = {
        "asr": shared_checkpoint(base, "nemo-tdt", lambda f: build_tiny_nemo_asr(f, "tdt")),
        "baseline_asr": shared_checkpoint(base, "nemo-ctc", lambda f: build_tiny_nemo_asr(f, "ctc")),
        "mt": shared_checkpoint(base, "nllb", lambda f: build_tiny_nllb(f / "tiny-nllb")),
        "tts": shared_checkpoint(base, "xtts", lambda f: write_tiny_xtts(f / "tiny", speakers=["Tiny Speaker"])),
    }
    folder = tmp_path_factory.mktemp("bench-gpu")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--smoke", "--threads", "1",
         "--work", str(folder / "work"), "--out", str(folder / "out"),
         "--checkpoints", ",".join(f"{name}={path}" for name, path in checkpoints.items())],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]
    return done.stdout, rows, folder


def row_values(table: str, label: str) -> list[float]:
    """The numbers in the value columns (after the 52-character label) of ``label``'s row."""
    for line in table.splitlines():
        if line.strip().startswith(label):
            return [float(x) for x in re.findall(NUMBER, line[LABEL_WIDTH:])]
    raise AssertionError(f"no row {label!r} in:\n{table}")


def test_every_part_ran_without_errors(smoke) -> None:
    _, rows, _ = smoke
    assert [row for row in rows if row["key"] == "error"] == []
    finished = [row["part"] for row in rows if row["key"] == "done"]
    assert finished == ["build", "production", "baseline", "cold", "processors"]


@pytest.mark.parametrize(
    "label",
    [
        "ASR (",
        "MT (",
        "TTS first chunk (",
        "speech end → first audio (compute)",
        "speech end → first audio (+ endpointing)",
        "pipeline overhead (processors)",
        "per request: speech end → first audio",
        "TTS first-chunk spread in a round",
        "baseline ASR",
        "baseline MT",
        "baseline TTS (whole sentence)",
        "baseline speech end → first audio",
        "baseline per request",
    ],
)
def test_the_table_has_a_p50_p95_row(smoke, label) -> None:
    table, _, _ = smoke
    values = row_values(table, label)
    assert len(values) >= 2 and all(v >= 0 for v in values[:2])
    assert values[0] <= values[1] + 1e-6  # p50 ≤ p95


@pytest.mark.parametrize(
    "label",
    ["first utterance after start-up", "last utterance", "first utterance without warm-up",
     "baseline / polyvox, 1 speaker p50", "baseline / polyvox, 2 speakers p95"],
)
def test_the_table_has_warm_start_and_ratio_rows(smoke, label) -> None:
    table, _, _ = smoke
    assert row_values(table, label)[-1] > 0


def test_stage_rows_add_up_and_name_the_engines(smoke) -> None:
    table, rows, folder = smoke
    stages = {row["key"]: row for row in rows if row["part"] == "production"}
    parts = sum(stages[key]["p50_ms"] for key in ("asr", "mt", "tts_first"))
    # p50 of sums vs sum of p50s: close, not equal.
    assert 0.5 * parts <= stages["e2e"]["p50_ms"] <= 1.5 * parts
    assert stages["load_mt"]["backend"] == "ctranslate2" and stages["load_mt"]["dtype"] == "int8"
    assert stages["load_asr"]["cuda_graphs"] is False  # no CUDA here
    assert "2 simultaneous speakers" in table
    assert (folder / "out" / "table.txt").read_text().strip() in table
