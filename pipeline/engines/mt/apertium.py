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
import shlex
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
#: While a request waits this long without a word from the pipeline, its tools are
#: checked; a request normally takes a few milliseconds.
_HEALTH_CHECK_S = 0.05
#: Longest wait for a new pipeline's tools to be forked by the shell.
_FORK_WAIT_S = 1.0
_INSTALL_HINT = "apt install apertium-eng-spa (or the apertium-<pair> package you need)"


class ApertiumMTEngine(MTEngine):
    """Apertium translation through one persistent, null-flushing pipeline per direction.

    One engine serves every room: each direction's process has its own lock, so
    translations in different directions run in parallel and requests in one direction
    queue (each takes milliseconds).

    Every tool of a pipeline is watched, not only the shell that runs them: before and
    after each request the engine checks that each tool it started is still running.
    A pipeline that lost any tool (killed, crashed) is restarted, and a request it was
    answering is retried once on the fresh one: a tool dying in the middle makes the
    rest of the pipeline flush an empty or partial answer, which is never returned. An
    empty answer for a non-blank text is a failure too. A request that takes longer
    than ``timeout_s + timeout_per_char_s × len(text)`` (plus ``start_timeout_s`` when
    it had to start the pipeline) kills the pipeline and fails with a retryable
    :class:`EngineError`; the next request starts a fresh one.

    Args:
        modes_dir: Where the ``<src>-<tgt>.mode`` files of the installed pairs live.
        mark_unknown: Mark words Apertium does not know with ``*`` (useful when judging
            a pair's coverage; users would rather not see them).
        timeout_s: Wait for one text's translation (per hop) on top of the per-character time.
        timeout_per_char_s: Wait per character of the text (translation runs at ~75 µs
            per character on a loaded 2-core machine; the default allows 13×).
        start_timeout_s: Extra wait for a request that starts the pipeline (loading its
            13 tools' data takes ~0.5 s on a loaded 2-core machine).
        max_pivots: Most intermediate languages a route may go through (0: direct pairs
            only; at most 2).
    """

    name: ClassVar[str] = "apertium"

    def __init__(
        self,
        *,
        modes_dir: str = "/usr/share/apertium/modes",
        mark_unknown: bool = False,
        timeout_s: float = 2.0,
        timeout_per_char_s: float = 0.001,
        start_timeout_s: float = 10.0,
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
        self._timeout_per_char_s = timeout_per_char_s
        self._start_timeout_s = start_timeout_s
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

    def tool_ids(self, source: str, target: str) -> list[int]:
        """The pids of every tool of the pipeline serving ``source`` → ``target``, in
        start order (the shell of :meth:`process_id` not included); empty while none runs."""
        with self._lock:
            process = self._processes.get((_language(source), _language(target)))
        return process.tool_ids if process is not None else []

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
                process = _ApertiumProcess(
                    mode,
                    self._generator_option,
                    self._timeout_s,
                    self._timeout_per_char_s,
                    self._start_timeout_s,
                )
                self._processes[(source, target)] = process
            return process


class _ApertiumProcess:
    """One running null-flush pipeline for one mode, used by one request at a time."""

    def __init__(
        self,
        mode: Path,
        generator_option: str,
        timeout_s: float,
        timeout_per_char_s: float,
        start_timeout_s: float,
    ) -> None:
        self._mode = mode
        self._generator_option = generator_option
        self._timeout_s = timeout_s
        self._timeout_per_char_s = timeout_per_char_s
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._command: str | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        # Every tool of the running pipeline: pid → start time (so a reused pid is not
        # taken for the tool), and how many tools the command has.
        self._tools: dict[int, int] = {}
        self._tool_count = 0

    @property
    def pid(self) -> int | None:
        popen = self._popen
        return popen.pid if popen is not None and popen.poll() is None else None

    @property
    def tool_ids(self) -> list[int]:
        return list(self._tools) if self.pid is not None else []

    def translate(self, text: str) -> str:
        # NUL ends a request and newlines would be read as blanks anyway.
        payload = (_escape(text.replace("\0", " ")) + "\n\0").encode("utf-8")
        failure = ""
        with self._lock:
            for attempt in (1, 2):
                timeout = self._timeout_s + self._timeout_per_char_s * len(text)
                problem = self._health()
                if problem is not None:
                    if self._popen is not None:
                        logger.warning("Apertium {} {}; restarting it", self._mode.stem, problem)
                        self._stop()
                    self._start()
                    timeout += self._start_timeout_s
                try:
                    output = self._exchange(payload, timeout)
                except _ProcessDied as exc:
                    failure = f"it exited while translating: {self._stop() or exc}"
                except TimeoutError:
                    self._stop()
                    raise EngineError(
                        f"Apertium {self._mode.stem} took over {timeout:.2f} s for "
                        f"{len(text)} characters; restarted it"
                    ) from None
                else:
                    # A tool that died during the request made the tools after it flush
                    # whatever they had: an empty or partial answer, never to be used.
                    if len(self._tools) < self._tool_count:  # some were not forked yet at start
                        self._tools = _process_group_members(self._popen)
                    problem = self._health()
                    translation = _unescape(output.decode("utf-8", errors="replace")).strip()
                    if problem is None and translation:
                        return translation
                    failure = problem or "it answered nothing for a non-blank text"
                    self._stop()
                if attempt == 1:
                    logger.warning("Apertium {}: {}; retrying on a fresh pipeline", self._mode.stem, failure)
        raise EngineError(f"Apertium {self._mode.stem} failed twice: {failure}")

    def _health(self) -> str | None:
        """``None`` while the shell and every tool it started run; else what is wrong."""
        popen = self._popen
        if popen is None:
            return "is not running"
        if popen.poll() is not None:
            return "had exited"
        for pid, started in self._tools.items():
            if _process_start(pid) != started:
                return f"lost a tool of its pipeline (pid {pid})"
        return None

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
        self._tool_count = _count_tools(self._command)
        self._tools = _wait_for_tools(self._popen, self._tool_count)
        logger.debug(
            "started Apertium {} (pid {}, {} tools)", self._mode.stem, self._popen.pid, len(self._tools)
        )

    def _exchange(self, payload: bytes, timeout: float) -> bytes:
        """Write one request and read its answer up to the NUL, within ``timeout`` seconds."""
        popen = self._popen
        assert popen is not None and popen.stdin is not None and popen.stdout is not None
        stdin_fd, stdout_fd = popen.stdin.fileno(), popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(stdin_fd, select.POLLOUT)
        poller.register(stdout_fd, select.POLLIN)
        written = 0
        received = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            events = poller.poll(min(remaining, _HEALTH_CHECK_S) * 1000)
            if not events:
                # The shell keeps the output pipe open, so a dead last tool is no EOF:
                # only looking at the tools tells a dead pipeline from a slow one.
                problem = self._health()
                if problem is not None:
                    raise _ProcessDied(problem)
            for fd, event in events:
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
        self._tools = {}
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


def _process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot); ``None`` if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ... starttime(22nd)": comm may hold spaces and ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _count_tools(command: str) -> int:
    """How many tools a shell pipeline runs: its top-level "|", plus one."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        return sum(1 for token in lexer if token == "|") + 1
    except ValueError:  # unbalanced quotes: bash will say so
        return 1


def _wait_for_tools(popen: subprocess.Popen[bytes], count: int) -> dict[int, int]:
    """The pipeline's tools once the shell has forked ``count`` of them (or after a second)."""
    deadline = time.monotonic() + _FORK_WAIT_S
    while True:
        tools = _process_group_members(popen)
        if len(tools) >= count or time.monotonic() > deadline or popen.poll() is not None:
            return tools
        time.sleep(0.005)


def _process_group_members(popen: subprocess.Popen[bytes] | None) -> dict[int, int]:
    """The processes of the pipeline's process group (its session), but the shell itself.

    The pipeline runs in a session of its own, so its process group is exactly the
    shell and the tools it forked. Linux only (``/proc``); elsewhere it finds nothing
    and only the shell is watched.
    """
    if popen is None:
        return {}
    members: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit() or int(entry) == popen.pid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 20 and int(fields[2]) == popen.pid and fields[0] not in (b"Z", b"X"):
            members[int(entry)] = int(fields[19])
    return dict(sorted(members.items(), key=lambda item: (item[1], item[0])))


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
