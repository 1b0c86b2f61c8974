"""Offline English ASR with CMU PocketSphinx (the ``offline`` extra).

The acoustic model, dictionary and language model ship inside the ``pocketsphinx``
wheel, so nothing is downloaded. Accuracy is modest (word error rate of roughly
0.15-0.35 on read speech) but it runs at a fraction of real time on one CPU core.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from pipeline.engines.base import ASREngine, Transcript
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)

if TYPE_CHECKING:
    from pocketsphinx import Decoder

__all__ = ["PocketSphinxASREngine"]

_INSTALL_HINT = "pocketsphinx is not installed: pip install 'polyvox[offline]'"

#: Shorter utterances hold no word; decoding them only invites a hallucinated one.
_MIN_SECONDS = 0.1
#: Peak level (in int16 steps, about -80 dBFS) at or below which audio is digital silence.
_DIGITAL_SILENCE = 3


class PocketSphinxASREngine(ASREngine):
    """English speech recognition with a pool of PocketSphinx decoders.

    A ``Decoder`` keeps per-utterance search state and is not thread-safe, so the
    engine holds ``pool_size`` of them and each ``transcribe`` call borrows one;
    further callers wait for a free decoder.

    The pocketsphinx 5.1 bindings hold the GIL for the whole decode, so in-process
    decoders take turns and every other Python thread (the event loop's included)
    stalls about 0.2 s per second of speech. By default (``processes=True``) each
    decoder therefore lives in its own worker process: decoding then runs truly in
    parallel and the event loop never stalls; only the audio bytes and the result
    cross the process boundary.

    Args:
        model: Directory of the acoustic model; defaults to the en-us model in the wheel.
        dictionary: Pronunciation dictionary file; defaults to the wheel's cmudict.
        lm: N-gram language model file; defaults to the wheel's en-us model.
        pool_size: How many decoders (so how many concurrent utterances) to keep.
        processes: Run the decoders in worker processes (recommended for live rooms);
            ``False`` keeps them in this process.

    Raises:
        ConfigError: ``pool_size`` is less than 1.
    """

    name = "pocketsphinx"
    languages = frozenset({"en"})
    sample_rate = 16000

    def __init__(
        self,
        *,
        model: str | None = None,
        dictionary: str | None = None,
        lm: str | None = None,
        pool_size: int = 2,
        processes: bool = True,
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"pocketsphinx pool_size must be at least 1, not {pool_size}")
        self._model = model
        self._dictionary = dictionary
        self._lm = lm
        self._pool_size = pool_size
        self._pool: queue.Queue[Decoder] | None = None
        self._processes = processes
        self._workers: queue.Queue[_Worker] | None = None
        self._options: dict[str, Any] = {}
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """Create the decoder pool (about 0.3 s per decoder).

        Raises:
            ImportError: the ``offline`` extra is not installed.
            EngineUnavailableError: a configured model file or directory does not exist.
        """
        with self._load_lock:
            if self._pool is not None or self._workers is not None:
                return
            try:
                from pocketsphinx import Decoder
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            options: dict[str, Any] = {"samprate": self.sample_rate, "loglevel": "FATAL"}
            # Only pass what was configured: the Decoder fills the rest with the
            # en-us model from the wheel, which is the default we want.
            for setting, key, path, want_dir in (
                ("model", "hmm", self._model, True),
                ("dictionary", "dict", self._dictionary, False),
                ("lm", "lm", self._lm, False),
            ):
                if path is None:
                    continue
                exists = os.path.isdir(path) if want_dir else os.path.isfile(path)
                if not exists:
                    kind = "directory" if want_dir else "file"
                    raise EngineUnavailableError(f"pocketsphinx {setting} {kind} not found: {path}")
                options[key] = path

            self._options = options
            if self._processes:
                # Start them all, then wait: they load their models in parallel.
                started = [_Worker(self._options) for _ in range(self._pool_size)]
                workers: queue.Queue[_Worker] = queue.Queue()
                try:
                    for worker in started:
                        worker.wait_ready()
                        workers.put(worker)
                except BaseException:
                    for worker in started:
                        worker.close()
                    raise
                self._workers = workers
                return
            pool: queue.Queue[Decoder] = queue.Queue()
            try:
                for _ in range(self._pool_size):
                    pool.put(Decoder(**options))
            except (RuntimeError, ValueError) as exc:
                raise EngineUnavailableError(
                    f"pocketsphinx could not load its model ({exc})"
                ) from exc
            self._pool = pool

    def warmup(self) -> None:
        """Decode 0.5 s of faint noise once on every decoder in the pool."""
        self.load()
        rng = np.random.default_rng(0)
        noise = rng.normal(0.0, 30.0, self.sample_rate // 2).astype(np.int16)
        # The pool is FIFO, so consecutive calls rotate through every decoder.
        for _ in range(self._pool_size):
            self.transcribe(noise, self.sample_rate, "en")

    def close(self) -> None:
        """Drop the decoders; a later call loads them again."""
        with self._load_lock:
            self._pool = None
            workers, self._workers = self._workers, None
        while workers is not None and not workers.empty():
            workers.get_nowait().close()

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe one utterance of English speech.

        Args:
            pcm: Mono samples, 1-D int16 (or float in [-1, 1], converted).
            sample_rate: Must be 16000.
            language: Must be ``"en"``.

        Returns:
            Lower-case words without punctuation; ``confidence`` is the mean
            posterior of the recognised words; ``extra["words"]`` holds
            ``(word, start_s, end_s, posterior)`` tuples.

        Raises:
            UnsupportedLanguageError: ``language`` is not ``"en"``.
            EngineError: wrong sample rate or shape or dtype (not retryable), or the
                decoder failed.
        """
        if language not in self.languages:
            raise UnsupportedLanguageError(
                f"pocketsphinx only transcribes English (en), not {language!r}"
            )
        if sample_rate != self.sample_rate:
            raise EngineError(
                f"pocketsphinx needs {self.sample_rate} Hz audio, got {sample_rate} Hz",
                retryable=False,
            )
        samples = _as_int16(pcm)
        if samples.size < _MIN_SECONDS * self.sample_rate:
            return Transcript(text="", language="en", punctuated=False)
        if int(np.max(np.abs(samples.astype(np.int32)))) <= _DIGITAL_SILENCE:
            # All-zero input gives degenerate log-spectra and a hallucinated word.
            return Transcript(text="", language="en", punctuated=False)

        if self._pool is None and self._workers is None:
            self.load()
        if self._workers is not None:
            return self._transcribe_in_worker(samples)
        pool = self._pool
        assert pool is not None
        decoder = pool.get()
        try:
            return _decode(decoder, samples)
        except RuntimeError as exc:
            raise EngineError(f"pocketsphinx failed to decode: {exc}") from exc
        finally:
            pool.put(decoder)

    def _transcribe_in_worker(self, samples: np.ndarray) -> Transcript:
        workers = self._workers
        assert workers is not None
        worker = workers.get()
        try:
            return worker.transcribe(samples)
        except RuntimeError as exc:
            raise EngineError(f"pocketsphinx failed to decode: {exc}") from None
        except (OSError, EOFError, ValueError) as exc:
            # The worker died (killed, out of memory) or spoke garbage: replace it so
            # the next utterance works, and fail only this one.
            worker.close()
            worker = _Worker(self._options)
            worker.wait_ready()
            raise EngineError(f"pocketsphinx worker process failed ({exc}); restarted it") from None
        finally:
            workers.put(worker)


class _Worker:
    """One decoder in its own process (``python -m pipeline.engines.asr.pocketsphinx``).

    Not ``multiprocessing``: its spawn start method re-imports the caller's
    ``__main__``, which breaks scripts without a main guard. Requests are the audio
    as a length-prefixed int16 block; replies a length-prefixed JSON document.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        # The worker imports this module, so make sure the folder holding `pipeline`
        # is on its path even when polyvox runs from a checkout rather than an install.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        absolute = {k: os.path.abspath(v) if k in ("hmm", "dict", "lm") else v for k, v in options.items()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.engines.asr.pocketsphinx", json.dumps(absolute)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def wait_ready(self) -> None:
        """Wait for the worker to load its model.

        Raises:
            EngineUnavailableError: the worker could not load it.
        """
        try:
            ready = _read_message(self.process.stdout)  # type: ignore[arg-type]
        except (EOFError, ValueError) as exc:
            self.close()
            raise EngineUnavailableError(f"pocketsphinx worker process failed to start ({exc})") from None
        if ready.get("error"):
            self.close()
            raise EngineUnavailableError(f"pocketsphinx could not load its model ({ready['error']})")

    def transcribe(self, samples: np.ndarray) -> Transcript:
        data = samples.tobytes()
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(struct.pack("<I", len(data)) + data)
        stdin.flush()
        reply = _read_message(stdout)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return Transcript(**reply)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _read_message(stream: IO[bytes]) -> dict[str, Any]:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("worker process ended")
    (size,) = struct.unpack("<I", header)
    return json.loads(stream.read(size))


def _write_message(stream: IO[bytes], message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def _worker_main(options: dict[str, Any]) -> None:
    """The worker process: load a decoder, then decode requests until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        from pocketsphinx import Decoder

        decoder = Decoder(**options)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        _write_message(stdout, {"error": str(exc)})
        return
    _write_message(stdout, {"ready": True})
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        (size,) = struct.unpack("<I", header)
        samples = np.frombuffer(stdin.read(size), dtype="<i2")
        try:
            transcript = _decode(decoder, samples)
            _write_message(stdout, {
                "text": transcript.text, "language": transcript.language,
                "punctuated": transcript.punctuated, "confidence": transcript.confidence,
                "extra": transcript.extra,
            })
        except RuntimeError as exc:
            _write_message(stdout, {"error": str(exc)})


def _decode(decoder: Decoder, samples: np.ndarray) -> Transcript:
    # The front end carries state from one utterance into the next (cepstral mean,
    # among others), so the same audio could decode differently depending on which
    # pooled decoder got it and what that decoder heard before, possibly another
    # speaker. Rebuilding it costs ~0.05 ms and makes every result reproducible.
    decoder.reinit_feat()
    decoder.start_utt()
    try:
        decoder.process_raw(samples.tobytes(), full_utt=True)
    finally:
        # Always close the utterance, or the next borrower's start_utt fails.
        decoder.end_utt()
    hyp = decoder.hyp()
    if hyp is None or not hyp.hypstr.strip():
        return Transcript(text="", language="en", punctuated=False)

    frame_rate = float(decoder.config["frate"])
    words: list[tuple[str, float, float, float]] = []
    for seg in decoder.seg():
        if _is_filler(seg.word):
            continue
        # Python bindings already turn log posteriors into probabilities.
        posterior = min(max(float(seg.prob), 0.0), 1.0)
        words.append(
            (
                _strip_alternate(seg.word),
                seg.start_frame / frame_rate,
                (seg.end_frame + 1) / frame_rate,
                posterior,
            )
        )
    confidence = float(np.mean([w[3] for w in words])) if words else None
    return Transcript(
        text=hyp.hypstr,
        language="en",
        punctuated=False,
        confidence=confidence,
        extra={"words": words, "utterance_posterior": float(hyp.prob)},
    )


def _as_int16(pcm: np.ndarray) -> np.ndarray:
    """1-D little-endian int16 samples from ``pcm``, converting floats in [-1, 1]."""
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise EngineError(
            f"pocketsphinx needs mono 1-D audio, got shape {array.shape}", retryable=False
        )
    if array.dtype == np.int16:
        return np.ascontiguousarray(array, dtype="<i2")
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (not np.all(np.isfinite(array)) or np.max(np.abs(array)) > 1.0):
            raise EngineError("float audio must be finite and within [-1, 1]", retryable=False)
        return np.ascontiguousarray(np.round(array * 32767.0), dtype="<i2")
    raise EngineError(
        f"pocketsphinx needs int16 (or float) samples, got {array.dtype}", retryable=False
    )


def _is_filler(word: str) -> bool:
    # <s>, </s>, <sil> and noise words such as [NOISE] or ++BREATH++.
    return word.startswith(("<", "[", "+"))


def _strip_alternate(word: str) -> str:
    # The dictionary names alternate pronunciations "word(2)".
    return word.split("(", 1)[0] if word.endswith(")") else word


if __name__ == "__main__":
    _worker_main(json.loads(sys.argv[1]))
