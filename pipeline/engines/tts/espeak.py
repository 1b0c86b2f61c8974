"""Offline text to speech with the ``espeak-ng`` command-line program.

espeak-ng is robotic but small, fast (a sentence takes a few tens of milliseconds) and
speaks about a hundred languages. It runs as one short-lived process per sentence, so
calls from many threads never share state and a stalled request can be killed on its
own: each sentence has a deadline derived from its length, and an espeak-ng that is
killed, hangs or says nothing for a non-blank sentence is an :class:`EngineError`,
never silence. Install it with ``apt install espeak-ng``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from loguru import logger

from pipeline.engines.base import TTSEngine
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.languages import family_codes, normalize
from pipeline.text import split_sentences

__all__ = ["EspeakTTSEngine"]

_INSTALL_HINT = "apt install espeak-ng"
#: Length of the chunks ``synthesize`` yields, in seconds.
_CHUNK_SECONDS = 0.1
#: espeak-ng writes 16-bit mono PCM at this rate; ``load`` checks it.
_ESPEAK_SAMPLE_RATE = 22050
_READ_BYTES = 4096
_WAV_PCM = 1


class EspeakTTSEngine(TTSEngine):
    """Text to speech with espeak-ng, streamed sentence by sentence.

    Text reaches espeak-ng on its standard input, never on its command line, and SSML
    is off, so user text can neither pass options nor be read as markup.

    Args:
        voices: Language (ISO 639-1) → espeak-ng voice, added to or replacing the
            language registry's voices (``en`` → ``en-us``, ``fr`` → ``fr-fr``,
            ``pt`` → ``pt-br``, ``zh`` → ``cmn``, ...; a language the registry gives no
            voice uses the installed voice named after it). A voice may carry a
            variant, as in ``"en-us+f3"``.
        rate: Speaking rate in words per minute (80-450).
        pitch: Pitch adjustment (0-99, 50 is the voice's own).
        binary: The espeak-ng executable, a name on ``PATH`` or a path.
        timeout_s: Longest wait for espeak-ng's output per sentence, on top of the
            per-character time (time the caller spends between chunks not counted).
        timeout_per_char_s: Extra wait per character of the sentence (espeak-ng takes
            ~0.45 ms per character on a loaded 2-core machine; the default allows 20×).

    Raises:
        ConfigError: ``rate``, ``pitch`` or a timeout is out of range.
    """

    name = "espeak"
    clones_voices = False

    def __init__(
        self,
        *,
        voices: dict[str, str] | None = None,
        rate: int = 165,
        pitch: int = 50,
        binary: str = "espeak-ng",
        timeout_s: float = 2.0,
        timeout_per_char_s: float = 0.01,
    ) -> None:
        if timeout_s <= 0 or timeout_per_char_s < 0:
            raise ConfigError("espeak timeout_s must be positive and timeout_per_char_s not negative")
        if not 80 <= rate <= 450:
            raise ConfigError(f"espeak rate must be 80-450 words per minute, not {rate}")
        if not 0 <= pitch <= 99:
            raise ConfigError(f"espeak pitch must be 0-99, not {pitch}")
        self._configured_voices = {
            normalize(lang, strict=False): voice for lang, voice in (voices or {}).items()
        }
        self._rate = rate
        self._pitch = pitch
        self._binary = binary
        self._timeout_s = timeout_s
        self._timeout_per_char_s = timeout_per_char_s
        self._executable: str | None = None
        self._voices: dict[str, str] = {}
        self._sample_rate = _ESPEAK_SAMPLE_RATE
        self._load_lock = threading.Lock()
        self._loaded = False
        self._running: set[subprocess.Popen[bytes]] = set()
        self._running_lock = threading.Lock()

    # The base class declares ``languages`` on the class; here it depends on which
    # voices the installed espeak-ng has, so it is known only per instance.
    @property
    def languages(self) -> frozenset[str]:  # type: ignore[override]
        """Languages with an installed voice; loads the engine on first access."""
        self.load()
        return frozenset(self._voices)

    @property
    def sample_rate(self) -> int:
        """Sample rate of the chunks: 22050 Hz, as read back from espeak-ng in ``load``."""
        return self._sample_rate

    def load(self) -> None:
        """Find espeak-ng, list its voices and read the sample rate it writes.

        Raises:
            EngineUnavailableError: espeak-ng is missing or does not run.
            ConfigError: a configured voice is not installed.
        """
        with self._load_lock:
            if self._loaded:
                return
            executable = shutil.which(self._binary)
            if executable is None:
                raise EngineUnavailableError(
                    f"espeak-ng not found (looked for {self._binary!r}): {_INSTALL_HINT}"
                )
            try:
                listing = subprocess.run(
                    [executable, "--voices"],
                    capture_output=True,
                    check=True,
                    timeout=10,
                ).stdout.decode("utf-8", "replace")
            except (OSError, subprocess.SubprocessError) as exc:
                raise EngineUnavailableError(
                    f"{executable} --voices failed ({exc}); reinstall with: {_INSTALL_HINT}"
                ) from exc
            self._executable = executable
            self._voices = _choose_voices(_parse_voice_list(listing), self._configured_voices)
            if not self._voices:
                raise EngineUnavailableError(
                    f"{executable} lists no voices; reinstall with: {_INSTALL_HINT}"
                )
            probe_voice = self._voices.get("en") or next(iter(self._voices.values()))
            stream = _WavStream()
            for _ in self._run_espeak("a", probe_voice, stream):
                pass
            if stream.sample_rate is None:
                raise EngineUnavailableError(f"{executable} wrote no audio for a test sentence")
            self._sample_rate = stream.sample_rate
            self._loaded = True
            logger.debug(
                "espeak-ng ready: {} languages at {} Hz", len(self._voices), self._sample_rate
            )

    def warmup(self) -> None:
        """Speak one short sentence, so the voice data is in the page cache."""
        language = "en" if "en" in self.languages else min(self.languages)
        for _ in self.synthesize("Hello.", language):
            pass

    def close(self) -> None:
        """Kill any espeak-ng process still running for an unfinished ``synthesize``."""
        with self._running_lock:
            running = list(self._running)
        for process in running:
            if process.poll() is None:
                process.kill()

    def synthesize(
        self, text: str, language: str, voice: Any | None = None
    ) -> Iterator[np.ndarray]:
        """Speak ``text``, one espeak-ng process per sentence, yielding ~100 ms chunks.

        The language is checked at once; the returned iterator is lazy and starts the
        first process when first advanced. Closing it early kills the running process.

        Args:
            text: Text to speak; blank text yields nothing.
            language: ISO 639-1 code or tag (a region such as ``"en-GB"`` is ignored).
            voice: Ignored: espeak-ng cannot clone voices.

        Returns:
            An iterator of mono int16 chunks at ``sample_rate``.

        Raises:
            UnsupportedLanguageError: no espeak-ng voice for ``language``.
            EngineError: (from the iterator) espeak-ng failed, was killed, took longer
                than its deadline, wrote no audio for a sentence or unreadable audio.
        """
        self.load()
        espeak_voice = self._voices.get(normalize(language, strict=False))
        if espeak_voice is None:
            raise UnsupportedLanguageError(f"espeak-ng has no voice for language {language!r}")
        return self._speak(split_sentences(text), espeak_voice)

    def _speak(self, sentences: list[str], espeak_voice: str) -> Iterator[np.ndarray]:
        for sentence in sentences:
            stream = _WavStream()
            yield from self._run_espeak(sentence, espeak_voice, stream)
            if stream.sample_rate not in (None, self._sample_rate):
                raise EngineError(
                    f"espeak-ng changed sample rate to {stream.sample_rate} Hz mid-stream",
                    retryable=False,
                )

    def _run_espeak(
        self, sentence: str, espeak_voice: str, stream: _WavStream
    ) -> Iterator[np.ndarray]:
        """Run espeak-ng on one sentence and yield its samples as they are written."""
        executable = self._executable
        assert executable is not None, "load() finds the executable first"
        # --stdin: the text is data on standard input, so a sentence starting with "-"
        # is never an option; no -m: "<speak>" is read out, not parsed as SSML.
        command = [
            executable,
            "-v", espeak_voice,
            "-s", str(self._rate),
            "-p", str(self._pitch),
            "-b", "1",
            "--stdin",
            "--stdout",
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as exc:
            raise EngineUnavailableError(
                f"cannot run {executable} ({exc}): {_INSTALL_HINT}"
            ) from exc
        with self._running_lock:
            self._running.add(process)
        text = " ".join(sentence.split())
        budget = self._timeout_s + self._timeout_per_char_s * len(text)
        try:
            assert process.stdin is not None and process.stdout is not None
            try:
                # espeak-ng --stdin reads all input before it speaks, so writing the
                # whole sentence first cannot deadlock against a full stdout pipe.
                process.stdin.write(text.encode("utf-8"))
                process.stdin.close()
            except BrokenPipeError:
                pass  # espeak-ng exited early; its exit status says why.
            chunk_samples = max(1, round(_CHUNK_SECONDS * self._sample_rate))
            pending = np.empty(0, dtype=np.int16)
            produced = 0
            # Only time spent waiting for espeak-ng counts against the deadline: a
            # consumer may take its time between chunks (espeak-ng then just waits).
            waited = 0.0
            fd = process.stdout.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                started = time.monotonic()
                ready = poller.poll(max(0.0, budget - waited) * 1000)
                waited += time.monotonic() - started
                if not ready:
                    raise EngineError(
                        f"espeak-ng took over {budget:.2f} s for a sentence of {len(text)} "
                        "characters; killed it"
                    )
                data = os.read(fd, _READ_BYTES)
                if not data:
                    break
                samples = stream.feed(data)
                produced += samples.size
                if samples.size:
                    pending = np.concatenate((pending, samples)) if pending.size else samples
                while pending.size >= chunk_samples:
                    yield pending[:chunk_samples].copy()
                    pending = pending[chunk_samples:]
            try:
                returncode = process.wait(timeout=max(0.1, budget - waited))
            except subprocess.TimeoutExpired:
                raise EngineError("espeak-ng closed its output but did not exit; killed it") from None
            if returncode < 0:
                name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
                raise EngineError(f"espeak-ng was killed ({name}) while speaking a sentence")
            if returncode != 0:
                assert process.stderr is not None
                detail = process.stderr.read().decode("utf-8", "replace").strip()
                raise EngineError(
                    f"espeak-ng exited with status {returncode}: {detail or 'no message'}"
                )
            if stream.started and not stream.header_done:
                raise EngineError("espeak-ng wrote a truncated WAV header")
            if produced == 0 and text:
                raise EngineError(f"espeak-ng wrote no audio for a sentence of {len(text)} characters")
            if pending.size:
                yield pending.copy()
        finally:
            # Runs on normal exit, on errors and when the consumer closes the iterator
            # early: the process must never outlive the request or linger as a zombie.
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            with self._running_lock:
                self._running.discard(process)


class _WavStream:
    """Incremental reader of the WAV espeak-ng writes to a pipe.

    A pipe cannot be rewound, so espeak-ng's header carries placeholder sizes; only the
    ``fmt `` chunk is trusted and everything after the ``data`` chunk header is samples.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.started = False
        self.header_done = False
        self.sample_rate: int | None = None

    def feed(self, data: bytes) -> np.ndarray:
        """Add bytes from the pipe; return the whole int16 samples now available."""
        self.started = True
        self._buffer += data
        if not self.header_done and not self._parse_header():
            return np.empty(0, dtype=np.int16)
        usable = len(self._buffer) - len(self._buffer) % 2
        samples = np.frombuffer(bytes(self._buffer[:usable]), dtype="<i2").astype(np.int16)
        del self._buffer[:usable]
        return samples

    def _parse_header(self) -> bool:
        """Consume the header if it is complete; whether the samples have started."""
        buffer = self._buffer
        if len(buffer) < 12:
            return False
        if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
            raise EngineError("espeak-ng did not write WAV audio", retryable=False)
        position = 12
        while True:
            if len(buffer) < position + 8:
                return False
            chunk_id = bytes(buffer[position : position + 4])
            (size,) = struct.unpack_from("<I", buffer, position + 4)
            body = position + 8
            if chunk_id == b"data":
                if self.sample_rate is None:
                    raise EngineError("espeak-ng WAV has no fmt chunk", retryable=False)
                del buffer[:body]
                self.header_done = True
                return True
            if len(buffer) < body + size + (size & 1):
                return False
            if chunk_id == b"fmt ":
                self._read_format(bytes(buffer[body : body + size]))
            position = body + size + (size & 1)  # chunks are padded to even length

    def _read_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise EngineError("espeak-ng WAV fmt chunk is too short", retryable=False)
        audio_format, channels, sample_rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        if (audio_format, channels, bits) != (_WAV_PCM, 1, 16):
            raise EngineError(
                f"espeak-ng wrote format {audio_format}, {channels} channels, {bits} bits; "
                "expected 16-bit mono PCM",
                retryable=False,
            )
        self.sample_rate = sample_rate


def _parse_voice_list(listing: str) -> dict[str, str]:
    """Names ``-v`` accepts, lowercased, from ``espeak-ng --voices``, each → its language.

    Each row reads ``Pty Language Age/Gender VoiceName File Other-languages``; ``-v``
    takes the language name (``en-us``) or the file (``gmw/en-US``).
    """
    names: dict[str, str] = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        language, file = fields[1].lower(), fields[4].lower()
        names.setdefault(language, language)
        names.setdefault(file, language)
    return names


def _choose_voices(installed: dict[str, str], configured: dict[str, str]) -> dict[str, str]:
    """Language code → voice: configured, else the registry's, else named after the code."""
    chosen: dict[str, str] = {}
    for language in sorted(set(installed.values())):
        try:
            code = normalize(language)
        except UnsupportedLanguageError:
            continue  # constructed and historical languages: Lojban, Quenya, ...
        if code not in chosen:
            # Prefer the voice named exactly for the code ("de"), else the first variant.
            chosen[code] = code if code in installed else language
    for code, espeak_voice in family_codes("espeak").items():
        if espeak_voice in installed:
            chosen[code] = espeak_voice
    for code, espeak_voice in configured.items():
        if espeak_voice.split("+")[0].lower() not in installed:
            raise ConfigError(
                f"espeak-ng has no voice {espeak_voice!r} for {code!r}; "
                "see `espeak-ng --voices` for the installed ones"
            )
        chosen[code] = espeak_voice
    return chosen
