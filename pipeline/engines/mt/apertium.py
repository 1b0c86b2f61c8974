"""Offline rule-based translation with Apertium, one long-lived process per language pair.

Apertium translates with a shell pipeline of small tools (``lt-proc | apertium-tagger |
... | lt-proc``), described by a ``.mode`` file per direction. Starting that pipeline costs
about a quarter of a second; translating a sentence through a running one costs a few
milliseconds. So each direction gets one pipeline, started on first use and kept running,
in null-flush mode (``-z``): every tool passes its output on when it reads a NUL byte, so
a request is the escaped text followed by ``"\\n\\0"`` and the answer is everything up to
the next NUL.

Install a pair with ``apt install apertium-eng-spa`` (English ↔ Spanish); the engine finds
the installed pairs in ``/usr/share/apertium/modes``.

**Pivots.** Where no installed pair translates ``source`` → ``target`` directly, the text
goes through another language: English → French as English → Spanish → French. The
route is the shortest through installed pairs (a direct pair always wins), at most
``max_pivots`` intermediate languages; among equally short routes the pivot with the most
installed pairs wins (Spanish, Apertium's best-connected language), then the first by
code. ``pairs()`` and ``supports()`` include pivoted directions; each route is logged
(with its pivot) the first time it is used. Every hop adds a few milliseconds, and some
quality: rule-based errors compound.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, ClassVar

from loguru import logger

from pipeline.engines.base import MTEngine
from pipeline.errors import EngineError, EngineUnavailableError, UnsupportedLanguageError
from pipeline.languages import finish_translation, from_engine_code, normalize

__all__ = ["ApertiumMTEngine"]

# "eng-spa.mode"; "spa-eng_US.mode" and "oci_aran-cat.mode" are variants, used only where
# the plain pair is missing.
_MODE_NAME = re.compile(
    r"^(?P<source>[a-z]{2,3})(?P<source_variant>_[A-Za-z0-9_]+)?"
    r"-(?P<target>[a-z]{2,3})(?P<target_variant>_[A-Za-z0-9_]+)?\.mode$"
)
# The characters Apertium's stream format gives a meaning; plain text escapes them.
_SPECIAL = re.compile(r"([\\^$@\[\]/<>{};])")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_REQUIRED_TOOLS = ("apertium-wblank-mode", "lt-proc", "bash")
_INSTALL_HINT = "apt install apertium-eng-spa (or the apertium-<pair> package you need)"


class ApertiumMTEngine(MTEngine):
    """Apertium translation through one persistent, null-flushing pipeline per direction.

    One engine serves every room: each direction's process has its own lock, so
    translations in different directions run in parallel and requests in one direction
    queue (each takes milliseconds). A request that takes longer than ``timeout_s``
    kills that process and fails with a retryable :class:`EngineError`; the next request
    starts a fresh one. A process that died between requests is restarted and the
    request retried once.

    Args:
        modes_dir: Where the ``<src>-<tgt>.mode`` files of the installed pairs live.
        mark_unknown: Mark words Apertium does not know with ``*`` (useful when judging
            a pair's coverage; users would rather not see them).
        timeout_s: Longest wait for one text's translation (per hop).
        max_pivots: Most intermediate languages a route may go through (0: direct pairs
            only; at most 2).
    """

    name: ClassVar[str] = "apertium"

    def __init__(
        self,
        *,
        modes_dir: str = "/usr/share/apertium/modes",
        mark_unknown: bool = False,
        timeout_s: float = 10.0,
        max_pivots: int = 1,
    ) -> None:
        if not 0 <= max_pivots <= 2:
            raise ValueError(f"max_pivots must be 0, 1 or 2, not {max_pivots}")
        self._max_pivots = max_pivots
        self._routes: dict[tuple[str, str], tuple[str, ...]] | None = None
        self._announced: set[tuple[str, ...]] = set()
        self._modes_dir = Path(modes_dir)
        self._generator_option = "-g" if mark_unknown else "-n"
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._modes: dict[tuple[str, str], Path] | None = None
        self._processes: dict[tuple[str, str], _ApertiumProcess] = {}
        self._loaded = False

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Check that Apertium and at least one language pair are installed.

        Raises:
            EngineUnavailableError: a tool of the pipeline or every pair is missing.
        """
        missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise EngineUnavailableError(
                f"Apertium is not installed ({', '.join(missing)} not found): {_INSTALL_HINT}"
            )
        if not self._discover():
            raise EngineUnavailableError(
                f"no Apertium language pairs in {self._modes_dir}: {_INSTALL_HINT}"
            )
        self._loaded = True
        direct = sorted(self._discover())
        pivoted = len(self._all_routes()) - len(direct)
        logger.debug(
            "Apertium pairs: {}; {} more through a pivot", _format_pairs(direct), pivoted
        )

    def warmup(self) -> None:
        """Start the English → Spanish process (or the first pair's) with one translation."""
        pairs = self.pairs()
        if not pairs:
            return
        source, target = ("en", "es") if ("en", "es") in pairs else pairs[0]
        self.translate(["Hello."], source, target)

    def close(self) -> None:
        """Stop every pipeline; a later translation starts them again."""
        with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
        for process in processes:
            process.close()

    # --- MTEngine ----------------------------------------------------------------------

    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, target) direction as ISO 639-1 codes, sorted: the installed
        pairs and those reached through pivots."""
        return sorted(self._all_routes())

    def supports(self, source: str, target: str) -> bool:
        """Whether ``source`` → ``target`` can be translated (directly or through a pivot)."""
        return (_language(source), _language(target)) in self._all_routes()

    def route(self, source: str, target: str) -> list[str]:
        """The languages a ``source`` → ``target`` translation goes through, ends included
        (``["en", "es", "fr"]``; two entries for a direct pair).

        Raises:
            UnsupportedLanguageError: no route within ``max_pivots``.
        """
        key = (_language(source), _language(target))
        path = self._all_routes().get(key)
        if path is None:
            direct = sorted(self._discover())
            raise UnsupportedLanguageError(
                f"Apertium cannot translate {key[0]}→{key[1]}, not even through "
                f"{self._max_pivots} pivot language(s); installed pairs: "
                f"{_format_pairs(direct) or 'none'} (apt install apertium-<pair> adds more)"
            )
        return list(path)

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text as one unit, in order; blank texts translate to "".

        The output gets the clean-up its language needs
        (:func:`pipeline.languages.finish_translation`: Spanish gets the opening "¿"/"¡"
        Apertium leaves out).

        Raises:
            UnsupportedLanguageError: no installed pair translates ``source`` → ``target``.
            EngineUnavailableError: Apertium is not installed.
            EngineError: the pipeline failed or timed out (retryable).
        """
        if not self._loaded:
            self.load()
        path = self.route(source, target)
        if len(path) > 2:
            self._announce(path)
        hops = [self._process(a, b) for a, b in zip(path, path[1:], strict=False)]
        results = []
        for text in texts:
            if not text.strip():
                results.append("")
                continue
            translation = text
            for process in hops:
                # Apertium leaves a double space where it drops a word ("considerar  cuánto").
                translation = " ".join(process.translate(translation).split())
                if not translation:
                    break
            results.append(finish_translation(translation, target))
        return results

    # --- diagnostics -------------------------------------------------------------------

    def process_id(self, source: str, target: str) -> int | None:
        """The pid of the pipeline serving ``source`` → ``target``; None while none runs."""
        with self._lock:
            process = self._processes.get((_language(source), _language(target)))
        return process.pid if process is not None else None

    # --- internals ---------------------------------------------------------------------

    def _discover(self) -> dict[tuple[str, str], Path]:
        """Map each installed direction to its mode file (found once, then cached)."""
        with self._lock:
            if self._modes is None:
                self._modes = _find_modes(self._modes_dir)
            return self._modes

    def _all_routes(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """Every reachable direction → its route (found once, then cached)."""
        modes = self._discover()
        with self._lock:
            if self._routes is None:
                self._routes = _find_routes(set(modes), self._max_pivots)
            return self._routes

    def _announce(self, path: list[str]) -> None:
        key = tuple(path)
        with self._lock:
            if key in self._announced:
                return
            self._announced.add(key)
        logger.info(
            "Apertium {}→{} goes through {} (no direct pair installed): {}",
            path[0], path[-1], ", ".join(path[1:-1]), " → ".join(path),
        )

    def _process(self, source: str, target: str) -> _ApertiumProcess:
        modes = self._discover()
        mode = modes.get((source, target))
        if mode is None:
            raise UnsupportedLanguageError(
                f"Apertium cannot translate {source}→{target}; installed pairs: "
                f"{_format_pairs(sorted(modes)) or 'none'} (apt install apertium-<pair> adds more)"
            )
        with self._lock:
            process = self._processes.get((source, target))
            if process is None:
                # Created here, started on its first request, under its own lock.
                process = _ApertiumProcess(mode, self._generator_option, self._timeout_s)
                self._processes[(source, target)] = process
            return process


class _ApertiumProcess:
    """One running null-flush pipeline for one mode, used by one request at a time."""

    def __init__(self, mode: Path, generator_option: str, timeout_s: float) -> None:
        self._mode = mode
        self._generator_option = generator_option
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._command: str | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        popen = self._popen
        return popen.pid if popen is not None and popen.poll() is None else None

    def translate(self, text: str) -> str:
        # NUL ends a request and newlines would be read as blanks anyway.
        payload = (_escape(text.replace("\0", " ")) + "\n\0").encode("utf-8")
        with self._lock:
            for attempt in (1, 2):
                if self._popen is None or self._popen.poll() is not None:
                    if self._popen is not None:
                        logger.warning("Apertium {} had exited; restarting it", self._mode.stem)
                    self._start()
                try:
                    output = self._exchange(payload)
                except _ProcessDied as exc:
                    diagnostics = self._stop()
                    if attempt == 2:
                        raise EngineError(
                            f"Apertium {self._mode.stem} exited while translating: "
                            f"{diagnostics or exc}"
                        ) from None
                    logger.warning("Apertium {} died mid-request; retrying", self._mode.stem)
                    continue
                except TimeoutError:
                    self._stop()
                    raise EngineError(
                        f"Apertium {self._mode.stem} took over {self._timeout_s:g} s; restarted it"
                    ) from None
                return _unescape(output.decode("utf-8", errors="replace")).strip()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._stop(graceful=True)

    def _start(self) -> None:
        if self._command is None:
            self._command = _pipeline_command(self._mode)
        self._stderr = tempfile.TemporaryFile()
        try:
            # "$1" is the generator's option, "$2" the tagger's; "apertium" becomes "$0".
            # A session of its own lets _stop() kill every tool of the pipeline at once.
            self._popen = subprocess.Popen(
                ["bash", "-c", self._command, "apertium", self._generator_option, ""],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start Apertium {self._mode.stem}: {exc}") from exc
        assert self._popen.stdin is not None
        # Non-blocking writes: a long text must not block us while the pipeline's output
        # fills its pipe waiting for us to read.
        os.set_blocking(self._popen.stdin.fileno(), False)
        logger.debug("started Apertium {} (pid {})", self._mode.stem, self._popen.pid)

    def _exchange(self, payload: bytes) -> bytes:
        """Write one request and read its answer up to the NUL, within the timeout."""
        popen = self._popen
        assert popen is not None and popen.stdin is not None and popen.stdout is not None
        stdin_fd, stdout_fd = popen.stdin.fileno(), popen.stdout.fileno()
        deadline = time.monotonic() + self._timeout_s
        poller = select.poll()
        poller.register(stdin_fd, select.POLLOUT)
        poller.register(stdout_fd, select.POLLIN)
        written = 0
        received = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for fd, event in poller.poll(remaining * 1000):
                if fd == stdin_fd:
                    if event & (select.POLLERR | select.POLLHUP):
                        raise _ProcessDied("its input closed")
                    try:
                        written += os.write(stdin_fd, payload[written:])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError as exc:
                        raise _ProcessDied("its input closed") from exc
                    if written == len(payload):
                        poller.unregister(stdin_fd)
                else:
                    chunk = os.read(stdout_fd, 65536)
                    if not chunk:
                        raise _ProcessDied("its output closed")
                    received += chunk
                    end = received.find(b"\0")
                    if end >= 0:
                        return bytes(received[:end])

    def _stop(self, *, graceful: bool = False) -> str:
        """Stop the pipeline (every tool in it) and return the last line of its stderr.

        Args:
            graceful: First close its input and give it a second to exit by itself, so
                bash reaps its tools; whatever is left of the pipeline is then killed.
        """
        popen, self._popen = self._popen, None
        diagnostics = ""
        if popen is not None:
            if graceful and popen.poll() is None and popen.stdin is not None:
                popen.stdin.close()
                try:
                    popen.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                logger.error("Apertium {} (pid {}) did not exit", self._mode.stem, popen.pid)
            for stream in (popen.stdin, popen.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.seek(0)
            diagnostics = self._stderr.read().decode("utf-8", errors="replace").strip()
            diagnostics = diagnostics.splitlines()[-1] if diagnostics else ""
            self._stderr.close()
            self._stderr = None
        return diagnostics


class _ProcessDied(Exception):
    """The pipeline closed a pipe in the middle of a request."""


def _find_modes(modes_dir: Path) -> dict[tuple[str, str], Path]:
    """Map (source, target) ISO codes to mode files, preferring the plain variant."""
    candidates: dict[tuple[str, str], list[tuple[bool, str, Path]]] = {}
    for path in modes_dir.glob("*.mode") if modes_dir.is_dir() else ():
        match = _MODE_NAME.match(path.name)
        if match is None:
            continue
        source, target = _from_apertium(match["source"]), _from_apertium(match["target"])
        is_variant = bool(match["source_variant"] or match["target_variant"])
        candidates.setdefault((source, target), []).append((is_variant, path.name, path))
    # "spa-eng.mode" beats "spa-eng_US.mode"; among variants only, the first by name.
    return {pair: min(options)[2] for pair, options in candidates.items()}


def _find_routes(
    direct: set[tuple[str, str]], max_pivots: int
) -> dict[tuple[str, str], tuple[str, ...]]:
    """The best route for every direction reachable through at most ``max_pivots`` pivots.

    Shortest first (a direct pair always wins); among routes of one length, the one whose
    pivots have the most installed pairs, then the first by language code.
    """
    degree: dict[str, int] = {}
    onward: dict[str, list[str]] = {}
    for source, target in direct:
        degree[source] = degree.get(source, 0) + 1
        degree[target] = degree.get(target, 0) + 1
        onward.setdefault(source, []).append(target)
    routes: dict[tuple[str, str], tuple[str, ...]] = {pair: pair for pair in direct}
    # Paths one hop longer than the last round's, for each length in turn.
    frontier: list[tuple[str, ...]] = sorted(direct)
    for _ in range(max_pivots):
        found: dict[tuple[str, str], tuple[str, ...]] = {}
        for path in frontier:
            for target in onward.get(path[-1], ()):
                if target in path:
                    continue
                longer = (*path, target)
                key = (path[0], target)
                if key in routes:
                    continue
                best = found.get(key)
                if best is None or _route_rank(longer, degree) < _route_rank(best, degree):
                    found[key] = longer
        routes.update(found)
        frontier = sorted(found.values())
    return routes


def _route_rank(path: tuple[str, ...], degree: dict[str, int]) -> tuple[int, tuple[str, ...]]:
    """Lower is better: best-connected pivots first, then by code."""
    pivots = path[1:-1]
    return (-sum(degree.get(p, 0) for p in pivots), pivots)


def _pipeline_command(mode: Path) -> str:
    """The shell pipeline of ``mode`` with every tool in null-flush mode."""
    try:
        completed = subprocess.run(
            ["apertium-wblank-mode", "-z", str(mode)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"cannot read Apertium mode {mode}: {exc}", retryable=False) from exc
    command = completed.stdout.strip()
    if not command:
        raise EngineError(f"Apertium mode {mode} is empty", retryable=False)
    return command


def _escape(text: str) -> str:
    """Plain text as an Apertium stream: special characters escaped, lines joined."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _SPECIAL.sub(r"\\\1", text)


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


def _language(code: str) -> str:
    """The ISO 639-1 code of a language tag: "en-US", "en_US", "EN", "eng" → "en".

    Languages the registry does not know (Asturian "ast") keep their code, as the mode
    files name them.
    """
    return normalize(code, strict=False)


def _from_apertium(code: str) -> str:
    """ISO 639-1 for a code in a mode file name ("spa" or, in older pairs, "es")."""
    try:
        return from_engine_code("apertium", code)
    except UnsupportedLanguageError:
        return code


def _format_pairs(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{source}→{target}" for source, target in pairs)
