"""Specification of the Apertium engine, run against the real eng-spa pair (no mocks)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.engines.base import MTEngine
from pipeline.engines.mt.apertium import ApertiumMTEngine
from pipeline.errors import EngineError, EngineUnavailableError, UnsupportedLanguageError

MODES_DIR = Path("/usr/share/apertium/modes")

pytestmark = pytest.mark.skipif(
    shutil.which("apertium-wblank-mode") is None or not (MODES_DIR / "eng-spa.mode").exists(),
    reason="Apertium eng-spa is not installed (apt install apertium-eng-spa)",
)


@pytest.fixture(scope="module")
def engine() -> Iterator[ApertiumMTEngine]:
    engine = ApertiumMTEngine()
    engine.load()
    engine.warmup()
    yield engine
    engine.close()


def test_is_an_mt_engine_named_apertium() -> None:
    assert issubclass(ApertiumMTEngine, MTEngine)
    assert ApertiumMTEngine.name == "apertium"


def test_finds_the_installed_pairs(engine: ApertiumMTEngine) -> None:
    assert ("en", "es") in engine.pairs()
    assert ("es", "en") in engine.pairs()
    assert engine.pairs() == sorted(engine.pairs())
    assert engine.supports("en", "es")
    assert engine.supports("en-US", "ES")
    assert not engine.supports("en", "ja")


def test_translates_english_to_spanish(engine: ApertiumMTEngine) -> None:
    (translation,) = engine.translate(["The cat is black."], "en", "es")
    assert "gato" in translation
    assert "negro" in translation


def test_translates_spanish_to_english(engine: ApertiumMTEngine) -> None:
    (translation,) = engine.translate(["El gato es negro."], "es", "en")
    assert translation == "The cat is black."


def test_keeps_order_and_translates_blank_texts_to_empty(engine: ApertiumMTEngine) -> None:
    result = engine.translate(["The dog.", "", "  ", "The house."], "en", "es")
    assert len(result) == 4
    assert "perro" in result[0]
    assert result[1:3] == ["", ""]
    assert "casa" in result[3]
    assert engine.translate([], "en", "es") == []


def test_special_characters_survive(engine: ApertiumMTEngine) -> None:
    # Each of these means something in Apertium's stream format unless escaped.
    (translation,) = engine.translate(["[5] dollars ^ $ / @ <b> {x}; a\\b"], "en", "es")
    for char in ["[5]", "^", "$", "/", "@", "<b>", "{x}", ";", "\\"]:
        assert char in translation


def test_newlines_do_not_split_a_request(engine: ApertiumMTEngine) -> None:
    result = engine.translate(["The cat\nis black.", "The dog."], "en", "es")
    assert "gato" in result[0] and "negro" in result[0]
    assert "perro" in result[1]


def test_spanish_questions_get_opening_marks(engine: ApertiumMTEngine) -> None:
    (question,) = engine.translate(["How are you today?"], "en", "es")
    assert question.startswith("¿") and question.endswith("?")


def test_reuses_one_process_and_is_fast(engine: ApertiumMTEngine) -> None:
    engine.translate(["Hello."], "en", "es")
    pid = engine.process_id("en", "es")
    assert pid is not None
    started = time.perf_counter()
    for index in range(200):
        (translation,) = engine.translate([f"I have {index} red apples."], "en", "es")
        assert "manzanas" in translation
    elapsed = time.perf_counter() - started
    assert engine.process_id("en", "es") == pid
    # ~3 ms each once warm; a process start per sentence would cost ~0.25 s each.
    assert elapsed < 4.0


def test_concurrent_callers_each_get_their_own_answer(engine: ApertiumMTEngine) -> None:
    jobs = [
        ("en", "es", "The cat is black."),
        ("en", "es", "The house is big."),
        ("es", "en", "El perro es blanco."),
        ("es", "en", "La casa es pequeña."),
    ]
    expected = {job: engine.translate([job[2]], job[0], job[1])[0] for job in jobs}
    assert len(set(expected.values())) == len(jobs)

    def run(job: tuple[str, str, str]) -> list[tuple[tuple[str, str, str], str]]:
        source, target, text = job
        return [(job, engine.translate([text], source, target)[0]) for _ in range(50)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [pair for batch in pool.map(run, jobs) for pair in batch]
    assert len(results) == 200
    for job, translation in results:
        assert translation == expected[job]


def test_unsupported_pair_names_the_supported_ones(engine: ApertiumMTEngine) -> None:
    with pytest.raises(UnsupportedLanguageError) as caught:
        engine.translate(["Hello."], "en", "ja")
    message = str(caught.value)
    assert "en→ja" in message
    assert "en→es" in message and "es→en" in message
    assert not caught.value.retryable


def test_restarts_after_the_process_is_killed(engine: ApertiumMTEngine) -> None:
    engine.translate(["Hello."], "en", "es")
    pid = engine.process_id("en", "es")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Straight away: bash may not be reaped yet, and its tools may still be running.
    (translation,) = engine.translate(["The cat is black."], "en", "es")
    assert "gato" in translation
    deadline = time.monotonic() + 5
    while engine.process_id("en", "es") == pid and time.monotonic() < deadline:
        time.sleep(0.01)
    # Once the death is seen, a request runs in a new process.
    (translation,) = engine.translate(["The cat is white."], "en", "es")
    assert "gato" in translation and "blanco" in translation
    new_pid = engine.process_id("en", "es")
    assert new_pid is not None and new_pid != pid


def test_restarts_after_the_whole_pipeline_is_killed(engine: ApertiumMTEngine) -> None:
    engine.translate(["Hello."], "en", "es")
    pid = engine.process_id("en", "es")
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # every tool of the pipeline, not only bash
    (translation,) = engine.translate(["The dog is white."], "en", "es")
    assert "perro" in translation


def test_timeout_fails_retryably_and_recovers() -> None:
    impatient = ApertiumMTEngine(timeout_s=1e-6, start_timeout_s=0)
    try:
        with pytest.raises(EngineError) as caught:
            impatient.translate(["Hello."], "en", "es")
        assert caught.value.retryable
        assert impatient.process_id("en", "es") is None  # the stuck process was killed
    finally:
        impatient.close()


def test_close_stops_processes_and_translation_restarts_them() -> None:
    engine = ApertiumMTEngine()
    engine.translate(["Hello."], "en", "es")
    pid = engine.process_id("en", "es")
    assert pid is not None
    engine.close()
    assert engine.process_id("en", "es") is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "gato" in engine.translate(["The cat."], "en", "es")[0]
    engine.close()


def test_marks_unknown_words_when_asked() -> None:
    engine = ApertiumMTEngine(mark_unknown=True)
    try:
        (marked,) = engine.translate(["The zorblax is black."], "en", "es")
        assert "*zorblax" in marked
    finally:
        engine.close()
    plain = ApertiumMTEngine()
    try:
        (unmarked,) = plain.translate(["The zorblax is black."], "en", "es")
        assert "zorblax" in unmarked and "*" not in unmarked
    finally:
        plain.close()


def test_discovers_pairs_from_mode_file_names(tmp_path: Path) -> None:
    for name in ["eng-cat.mode", "cat-eng.mode", "spa-eng_US.mode", "por-glg.mode", "README"]:
        (tmp_path / name).write_text("")
    engine = ApertiumMTEngine(modes_dir=str(tmp_path), max_pivots=0)
    assert engine.pairs() == [("ca", "en"), ("en", "ca"), ("es", "en"), ("pt", "gl")]
    assert engine.supports("pt", "gl")


# -- pivots -------------------------------------------------------------------------


def mode_files(folder: Path, *pairs: str) -> Path:
    for pair in pairs:
        (folder / f"{pair}.mode").write_text("")
    return folder


def test_pivoted_pairs_are_listed_and_supported(tmp_path: Path) -> None:
    modes = mode_files(tmp_path, "eng-spa", "spa-eng", "es-fr", "fr-es", "es-pt")
    engine = ApertiumMTEngine(modes_dir=str(modes))
    pivoted = {("en", "fr"), ("fr", "en"), ("en", "pt"), ("fr", "pt")}
    direct = {("en", "es"), ("es", "en"), ("es", "fr"), ("fr", "es"), ("es", "pt")}
    assert set(engine.pairs()) == direct | pivoted
    assert engine.supports("en-GB", "fr") and not engine.supports("pt", "en")  # no pt→es installed
    assert engine.route("en", "fr") == ["en", "es", "fr"]
    assert engine.route("en", "es") == ["en", "es"]
    with pytest.raises(UnsupportedLanguageError, match="pt→en, not even through 1 pivot"):
        engine.route("pt", "en")
    assert set(ApertiumMTEngine(modes_dir=str(modes), max_pivots=0).pairs()) == direct


def test_a_second_pivot_only_when_allowed(tmp_path: Path) -> None:
    modes = mode_files(tmp_path, "eng-cat", "cat-spa", "spa-ita")
    assert not ApertiumMTEngine(modes_dir=str(modes)).supports("en", "it")
    two = ApertiumMTEngine(modes_dir=str(modes), max_pivots=2)
    assert two.route("en", "it") == ["en", "ca", "es", "it"]
    with pytest.raises(ValueError, match="max_pivots"):
        ApertiumMTEngine(max_pivots=3)


def test_a_direct_pair_is_preferred_to_a_pivot(tmp_path: Path) -> None:
    modes = mode_files(tmp_path, "eng-spa", "es-fr", "eng-cat", "cat-fra", "eng-fra")
    assert ApertiumMTEngine(modes_dir=str(modes)).route("en", "fr") == ["en", "fr"]


def test_the_best_connected_pivot_wins(tmp_path: Path) -> None:
    # en→fr through ca or es: Spanish has more pairs installed, so it is the pivot.
    modes = mode_files(tmp_path, "eng-cat", "cat-fra", "eng-spa", "es-fr", "spa-eng", "es-pt")
    assert ApertiumMTEngine(modes_dir=str(modes)).route("en", "fr") == ["en", "es", "fr"]


def test_load_without_pairs_says_what_to_install(tmp_path: Path) -> None:
    engine = ApertiumMTEngine(modes_dir=str(tmp_path / "nowhere"))
    with pytest.raises(EngineUnavailableError, match="apt install apertium-eng-spa"):
        engine.load()
    assert engine.pairs() == []


# --------------------------------------------------------------------------- dying and stuck tools


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_killing_any_tool_between_calls_is_detected_and_never_gives_empty_text(
    engine: ApertiumMTEngine, which: str
) -> None:
    engine.translate(["Hello."], "en", "es")
    tools = engine.tool_ids("en", "es")
    assert len(tools) >= 10  # eng-spa is a pipeline of 13 tools
    victim = {"first": tools[0], "middle": tools[len(tools) // 2], "last": tools[-1]}[which]
    os.kill(victim, signal.SIGKILL)
    # Straight away, before anything had time to notice: never "" and never a stall.
    for text, words in (("The cat is black.", ("gato", "negro")), ("The dog is white.", ("perro", "blanco"))):
        (translation,) = engine.translate([text], "en", "es")
        assert all(word in translation for word in words), translation
    assert victim not in engine.tool_ids("en", "es")
    assert all(_alive(pid) for pid in engine.tool_ids("en", "es"))


def test_a_tool_killed_during_a_call_gives_the_translation_or_a_clear_error(engine: ApertiumMTEngine) -> None:
    engine.translate(["Hello."], "en", "es")
    middle = engine.tool_ids("en", "es")[6]
    text = "The black cat sleeps in the warm sun while the white dog runs. " * 60  # ~0.3 s
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(engine.translate, [text], "en", "es")
        time.sleep(0.05)
        os.kill(middle, signal.SIGKILL)
        try:
            (translation,) = pending.result(timeout=30)
        except EngineError as exc:
            assert exc.retryable and "Apertium" in str(exc)
        else:
            assert translation.count("gato") == 60 and translation.count("perro") == 60
    (after,) = engine.translate(["The house is big."], "en", "es")
    assert "casa" in after and "grande" in after


def test_a_stuck_tool_times_out_then_the_pipeline_recovers() -> None:
    engine = ApertiumMTEngine(timeout_s=0.5)
    try:
        engine.translate(["Hello."], "en", "es")
        tools = engine.tool_ids("en", "es")
        stuck = tools[len(tools) // 2]
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(EngineError, match="took over 0.52 s for 17 characters") as caught:
            engine.translate(["The cat is black."], "en", "es")
        waited = time.monotonic() - started
        assert caught.value.retryable
        deadline = time.monotonic() + 5
        while _alive(stuck) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(stuck)  # the whole stuck pipeline was killed, stopped tool included
        (translation,) = engine.translate(["The cat is black."], "en", "es")
        assert "gato" in translation
        print(f"\nstuck Apertium tool: timed out after {waited:.2f} s")
    finally:
        engine.close()


def test_the_timeout_grows_with_the_text() -> None:
    # The long text takes ~0.25 s on a quiet 2-core machine: five times the fixed budget.
    engine = ApertiumMTEngine(timeout_s=0.05, timeout_per_char_s=0.0)
    long_text = "The black cat sleeps in the warm sun while the white dog runs. " * 200
    try:
        engine.translate(["Hello."], "en", "es")
        with pytest.raises(EngineError, match="took over 0.05 s for 12600 characters"):
            engine.translate([long_text], "en", "es")
    finally:
        engine.close()
    patient = ApertiumMTEngine(timeout_s=0.05)  # + 1 ms per character: 12.65 s here
    try:
        (translation,) = patient.translate([long_text], "en", "es")
        assert translation.count("gato") == 200
    finally:
        patient.close()


def test_an_empty_answer_for_a_non_blank_text_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.engines.mt import apertium

    (tmp_path / "eng-spa.mode").write_text("")
    # A "pipeline" that answers every request with nothing (just the NUL that ends it).
    silent = (
        f"{shlex.quote(sys.executable)} -u -c 'import sys\n"
        "for line in iter(lambda: sys.stdin.buffer.read(1), b\"\"):\n"
        "    line == b\"\\0\" and (sys.stdout.buffer.write(b\"\\0\"), sys.stdout.flush())'"
    )
    monkeypatch.setattr(apertium, "_pipeline_command", lambda mode: silent)
    engine = ApertiumMTEngine(modes_dir=str(tmp_path))
    try:
        with pytest.raises(EngineError, match="answered nothing for a non-blank text"):
            engine.translate(["The cat is black."], "en", "es")
        assert engine.translate(["", "  "], "en", "es") == ["", ""]  # blank in, blank out
    finally:
        engine.close()


needs_pivot = pytest.mark.skipif(
    not (MODES_DIR / "es-fr.mode").exists(),
    reason="Apertium fr-es is not installed (apt install apertium-fr-es)",
)


@needs_pivot
def test_english_to_french_goes_through_spanish(caplog_loguru: list[str]) -> None:
    engine = ApertiumMTEngine()
    try:
        assert engine.route("en", "fr") == ["en", "es", "fr"]
        (french,) = engine.translate(["The weather is very good today."], "en", "fr")
        (spanish,) = engine.translate(["The weather is very good today."], "en", "es")
        # The pivot's output, translated on: the Spanish text through the es→fr pair.
        assert french == engine.translate([spanish], "es", "fr")[0]
        assert "aujourd'hui" in french and "temps" in french
        assert engine.process_id("en", "es") is not None and engine.process_id("es", "fr") is not None
    finally:
        engine.close()
    # The pivot is named in the log, once.
    assert sum("en→fr goes through es" in message for message in caplog_loguru) == 1, caplog_loguru


@needs_pivot
def test_every_pivoted_target_of_english_translates(engine: ApertiumMTEngine) -> None:
    for target in sorted({t for s, t in engine.pairs() if s == "en"} - {"en", "es"}):
        (text,) = engine.translate(["Good morning, my friend."], "en", target)
        assert text.strip() and text != "Good morning, my friend.", target


@pytest.fixture
def caplog_loguru() -> Iterator[list[str]]:
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda message: messages.append(str(message)), level="INFO")
    yield messages
    logger.remove(handler)
