"""Offline English ASR with CMU PocketSphinx (the ``offline`` extra).

The acoustic model, dictionary and language model ship inside the ``pocketsphinx``
wheel, so nothing is downloaded. Accuracy is modest (word error rate of roughly
0.15-0.35 on read speech) and it decodes at 0.2-0.4x real time on one core.

Decoding is incremental: a stream (:meth:`PocketSphinxASREngine.open_stream`) decodes
audio as it arrives, so the final hypothesis needs only the end of the utterance
(~80 ms of CPU: the end of the search and the best-path pass) after the last audio, and
``transcribe`` is the same algorithm fed the whole utterance at once (a stream and
``transcribe`` give the same words for the same audio).

Two choices make incremental decoding as accurate as whole-utterance decoding was:

- Cepstral mean normalisation. Whole-utterance decoding subtracts the mean over the
  utterance, which a live decoder does not have yet; pocketsphinx's live estimate starts
  from the model's prior and moves only after ~8 s, so the first words of every stream
  come out wrong (word error rate 0.38 instead of 0.27 on the librivox clips). A stream
  therefore estimates the mean from its first second of sound (a features-only pass,
  ~1 % of real time), then decodes from the start with it, and keeps it for the rest of
  the stream: 0.27 again.
- No ``fwdflat`` second pass: it re-scores the whole utterance at the end (~0.3 s for a
  few seconds of speech), which is the latency a stream exists to avoid, and it did not
  lower the error rate here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from pipeline.engines.base import ASREngine, ASRStream, Transcript, Word
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pocketsphinx import Decoder

__all__ = ["PocketSphinxASREngine"]

_INSTALL_HINT = "pocketsphinx is not installed: pip install 'polyvox[offline]'"

_RATE = 16000
#: Shorter utterances hold no word; decoding them only invites a hallucinated one.
_MIN_SAMPLES = int(0.1 * _RATE)
#: Peak level (in int16 steps, about -80 dBFS) at or below which audio is digital silence.
_DIGITAL_SILENCE = 3
#: Audio (from the first non-silent sample) the cepstral mean is estimated from.
_CMN_SAMPLES = int(1.0 * _RATE)
#: A one-word grammar: searching it costs next to nothing, so the features-only pass that
#: estimates the cepstral mean does not pay for a language-model search at ``end_utt``.
_CMN_SEARCH = "_polyvox_cmn"
_CMN_GRAMMAR = "#JSGF V1.0;\ngrammar cmn;\npublic <s> = a;\n"

# Requests to a worker: op, stream id, request id (0: no reply wanted), payload bytes.
_HEADER = struct.Struct("<BIII")
_OPEN, _FEED, _PARTIAL, _FINALIZE, _CUT, _CLOSE, _TRANSCRIBE, _WARMUP = range(1, 9)
_CUT_PAYLOAD = struct.Struct("<Q")
#: Audio a worker decodes between two requests: ~20 ms of CPU, the most a request waits.
_SLICE_SAMPLES = _RATE // 20
#: Linux's F_SETPIPE_SZ: a 1 MiB pipe holds 30 s of audio, so feeding never waits on a
#: worker that is busy with another stream for a moment.
_F_SETPIPE_SZ = 1031


class PocketSphinxASREngine(ASREngine):
    """English speech recognition with PocketSphinx decoders in worker processes.

    The pocketsphinx bindings hold the GIL for the whole decode, so in-process decoders
    take turns and every other Python thread (the event loop's included) stalls about
    0.2 s per second of speech. By default (``processes=True``) the decoders therefore
    live in ``pool_size`` worker processes: decoding runs truly in parallel, the event
    loop never stalls, and only audio and results cross the process boundary.

    **Streams.** Each open stream owns one decoder in one worker and is decoded there as
    its audio arrives. A new stream goes to the worker serving the fewest streams. Each
    worker loads ``streams_per_worker`` decoders when it starts (a decoder is ~90 MB and
    takes ~0.5 s to load, during which that worker serves nobody), so that many streams
    per worker open at once; more still work, each costing its worker one decoder load.
    The default, 2 workers x 2 streams, follows the CPU: a worker is one process on one
    core, pocketsphinx decodes at 0.2-0.4x real time, so a core keeps up with ~3 people
    talking at once; two keep finalize within ~0.1 s of the last audio. Give a bigger
    machine more workers (one per core) rather than more streams per worker.

    **Failures.** Every request to a worker has a deadline: ``timeout_s`` plus
    ``timeout_per_audio_s`` times the seconds of audio the worker has to decode before
    it can answer (the defaults, 5 s + 1.5x, leave room for a CPU shared with other
    work: on a busy 2-core machine decoding was seen at 0.9x real time, and a false
    alarm would kill a healthy worker). A worker that dies or misses a deadline is
    killed and replaced in the background; the requests it had in flight fail with a
    retryable :class:`EngineError` (never an empty transcript), and so does every later
    call of the streams it served (open new ones: they go to a healthy worker).
    ``transcribe`` waits for a replacement when no worker is left, up to
    ``start_timeout_s``. A ``transcribe`` call decodes its utterance in one go, holding
    up that worker's streams meanwhile: live rooms should stream.

    Args:
        model: Directory of the acoustic model; defaults to the en-us model in the wheel.
        dictionary: Pronunciation dictionary file; defaults to the wheel's cmudict.
        lm: N-gram language model file; defaults to the wheel's en-us model.
        pool_size: Worker processes (or, with ``processes=False``, decoders kept for
            ``transcribe``).
        processes: Run the decoders in worker processes (recommended for live rooms);
            ``False`` keeps them in this process (no timeouts then).
        streams_per_worker: Decoders each worker keeps loaded.
        timeout_s: Fixed part of every request's deadline.
        timeout_per_audio_s: Seconds added to a deadline per second of audio queued.
        start_timeout_s: How long a worker may take to load its decoders.

    Raises:
        ConfigError: a count is less than 1 or a timeout is not positive.
    """

    name = "pocketsphinx"
    languages = frozenset({"en"})
    sample_rate = _RATE
    supports_streaming = True

    def __init__(
        self,
        *,
        model: str | None = None,
        dictionary: str | None = None,
        lm: str | None = None,
        pool_size: int = 2,
        processes: bool = True,
        streams_per_worker: int = 2,
        timeout_s: float = 5.0,
        timeout_per_audio_s: float = 1.5,
        start_timeout_s: float = 30.0,
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"pocketsphinx pool_size must be at least 1, not {pool_size}")
        if streams_per_worker < 1:
            raise ConfigError(
                f"pocketsphinx streams_per_worker must be at least 1, not {streams_per_worker}"
            )
        if min(timeout_s, start_timeout_s) <= 0 or timeout_per_audio_s < 0:
            raise ConfigError("pocketsphinx timeouts must be positive")
        self._model = model
        self._dictionary = dictionary
        self._lm = lm
        self._pool_size = pool_size
        self._processes = processes
        self._streams_per_worker = streams_per_worker
        self._timeouts = _Timeouts(timeout_s, timeout_per_audio_s)
        self._start_timeout_s = start_timeout_s
        self._options: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        # In-process decoders (processes=False).
        self._pool: queue.Queue[Decoder] | None = None
        # Worker processes: one slot each; None while a replacement starts.
        self._slots: list[_Worker | None] | None = None
        self._slots_changed = threading.Condition()
        self._generation = 0  # bumped by load/close, so a late replacement is discarded

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Start the workers (or decoders), which load their models in parallel.

        Raises:
            ImportError: the ``offline`` extra is not installed.
            EngineUnavailableError: a configured model file or directory does not exist,
                or a worker could not load the model.
        """
        with self._load_lock:
            if self._pool is not None or self._slots is not None:
                return
            try:
                from pocketsphinx import Decoder  # noqa: F401 - only checks the extra
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            options: dict[str, Any] = {"samprate": _RATE, "loglevel": "FATAL", "fwdflat": False}
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
                options[key] = os.path.abspath(path)
            self._options = options

            if not self._processes:
                pool: queue.Queue[Decoder] = queue.Queue()
                for _ in range(self._pool_size):
                    pool.put(_new_decoder(options))
                self._pool = pool
                return

            generation = self._generation
            started = [self._start_worker(generation) for _ in range(self._pool_size)]
            try:
                for worker in started:
                    worker.wait_ready(self._start_timeout_s)
            except BaseException:
                for worker in started:
                    worker.close()
                raise
            with self._slots_changed:
                self._slots = list(started)

    def warmup(self) -> None:
        """Decode 0.5 s of faint noise once on every loaded decoder."""
        self.load()
        rng = np.random.default_rng(0)
        noise = rng.normal(0.0, 30.0, _RATE // 2).astype("<i2")
        if self._pool is not None:
            # The pool is FIFO, so consecutive calls rotate through every decoder.
            for _ in range(self._pool_size):
                self.transcribe(noise, _RATE, "en")
            return
        for worker in self._live_workers():
            seconds = self._streams_per_worker * noise.size / _RATE
            reply = worker.request(_WARMUP, 0, noise.tobytes(), cost_s=seconds, timeouts=self._timeouts)
            _raise_worker_error(reply)

    def close(self) -> None:
        """Stop the workers and drop the decoders; a later call loads them again."""
        with self._load_lock, self._slots_changed:
            self._generation += 1
            self._pool = None
            slots, self._slots = self._slots, None
            self._slots_changed.notify_all()
        for worker in slots or []:
            if worker is not None:
                worker.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for monitoring; empty in-process)."""
        return [worker.pid for worker in self._live_workers()]

    # --- ASREngine ---------------------------------------------------------------------

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe one utterance of English speech.

        Args:
            pcm: Mono samples, 1-D int16 (or float in [-1, 1], converted).
            sample_rate: Must be 16000.
            language: Must be ``"en"``.

        Returns:
            Lower-case words without punctuation, with their timings in ``words``;
            ``confidence`` is the mean posterior of the recognised words (also in
            ``extra["posteriors"]``, one per word).

        Raises:
            UnsupportedLanguageError: ``language`` is not ``"en"``.
            EngineError: wrong sample rate or shape or dtype (not retryable), or the
                decoder or its worker failed (retryable).
        """
        self._check_language(language)
        if sample_rate != _RATE:
            raise EngineError(
                f"pocketsphinx needs {_RATE} Hz audio, got {sample_rate} Hz", retryable=False
            )
        samples = _as_int16(pcm)
        if samples.size < _MIN_SAMPLES or _peak(samples) <= _DIGITAL_SILENCE:
            # All-zero input gives degenerate log-spectra and a hallucinated word.
            return Transcript(text="", language="en", punctuated=False)
        self.load()
        if self._pool is not None:
            decoder = self._pool.get()
            try:
                return _to_transcript(_decode_utterance(decoder, samples.tobytes()))
            except RuntimeError as exc:
                raise EngineError(f"pocketsphinx failed to decode: {exc}") from exc
            finally:
                self._pool.put(decoder)
        worker = self._acquire_worker(stream=False)
        try:
            reply = worker.request(
                _TRANSCRIBE, 0, samples.tobytes(), cost_s=samples.size / _RATE, timeouts=self._timeouts
            )
        finally:
            self._release_worker(worker, stream=False)
        _raise_worker_error(reply)
        assert reply is not None  # a request with a reply returns it
        return _to_transcript(reply["transcript"])

    def open_stream(self, language: str) -> ASRStream:
        """A stream decoded as it is fed, on one decoder of the least-loaded worker.

        Raises:
            UnsupportedLanguageError: ``language`` is not ``"en"``.
            EngineError: no worker answered (retryable).
        """
        self._check_language(language)
        self.load()
        pool = self._pool
        if pool is not None:
            try:
                decoder = pool.get_nowait()
            except queue.Empty:
                decoder = _new_decoder(self._options)
            return _LocalStream(_StreamDecoder(decoder), on_close=lambda d: _return_decoder(pool, d, self._pool_size))
        attempts = self._pool_size + 1
        while True:
            attempts -= 1
            worker = self._acquire_worker(stream=True)
            try:
                stream_id = worker.new_stream_id()
                # Opening may load a decoder (~0.5 s) when the worker has none spare.
                _raise_worker_error(worker.request(_OPEN, stream_id, cost_s=1.0, timeouts=self._timeouts))
            except EngineError:
                self._release_worker(worker, stream=True)
                if worker.alive or attempts <= 0:
                    raise
                continue  # it died before it was noticed: nothing was lost, try another
            except BaseException:
                self._release_worker(worker, stream=True)
                raise
            return _WorkerStream(self, worker, stream_id)

    # --- the worker pool ---------------------------------------------------------------

    def _check_language(self, language: str) -> None:
        if language not in self.languages:
            raise UnsupportedLanguageError(
                f"pocketsphinx only transcribes English (en), not {language!r}"
            )

    def _start_worker(self, generation: int) -> _Worker:
        return _Worker(
            self._options, self._streams_per_worker,
            on_death=lambda worker: self._on_worker_death(worker, generation),
        )

    def _live_workers(self) -> list[_Worker]:
        with self._slots_changed:
            return [w for w in self._slots or [] if w is not None and w.alive]

    def _acquire_worker(self, *, stream: bool) -> _Worker:
        """The least-loaded live worker; waits for a replacement when none is left."""
        deadline = time.monotonic() + self._start_timeout_s
        with self._slots_changed:
            while True:
                if self._slots is None:
                    raise EngineError("the pocketsphinx engine is closed", retryable=False)
                live = [w for w in self._slots if w is not None and w.alive]
                if live:
                    worker = min(live, key=lambda w: w.streams + w.transcribing)
                    if stream:
                        worker.streams += 1
                    else:
                        worker.transcribing += 1
                    return worker
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EngineError(
                        "no pocketsphinx worker is running (they are being restarted)", retryable=True
                    )
                self._slots_changed.wait(remaining)

    def _release_worker(self, worker: _Worker, *, stream: bool) -> None:
        with self._slots_changed:
            if stream:
                worker.streams -= 1
            else:
                worker.transcribing -= 1

    def _on_worker_death(self, worker: _Worker, generation: int) -> None:
        with self._slots_changed:
            if generation != self._generation or self._slots is None or worker not in self._slots:
                return
            index = self._slots.index(worker)
            self._slots[index] = None
        logger.warning("pocketsphinx worker {} {}; starting a replacement", worker.pid, worker.death)
        threading.Thread(
            target=self._replace_worker, args=(index, generation),
            name="pocketsphinx-restart", daemon=True,
        ).start()

    def _replace_worker(self, index: int, generation: int) -> None:
        delay = 0.5
        while True:
            with self._slots_changed:
                if generation != self._generation:
                    return
            worker = self._start_worker(generation)
            try:
                worker.wait_ready(self._start_timeout_s)
            except EngineUnavailableError as exc:
                logger.error("pocketsphinx worker failed to restart ({}); retrying in {:.1f} s", exc, delay)
                worker.close()
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
                continue
            with self._slots_changed:
                if generation == self._generation and self._slots is not None:
                    self._slots[index] = worker
                    self._slots_changed.notify_all()
                    logger.info("pocketsphinx worker {} replaced by {}", index, worker.pid)
                    return
            worker.close()
            return


class _Timeouts:
    """A request's deadline: ``base_s`` + ``per_audio_s`` x the audio it waits on."""

    def __init__(self, base_s: float, per_audio_s: float) -> None:
        self.base_s = base_s
        self.per_audio_s = per_audio_s

    def for_audio(self, seconds: float) -> float:
        return self.base_s + self.per_audio_s * seconds


# ------------------------------------------------------------------------ stream objects


class _WorkerStream(ASRStream):
    """A stream whose decoder lives in a worker process (the parent's handle on it)."""

    def __init__(self, engine: PocketSphinxASREngine, worker: _Worker, stream_id: int) -> None:
        self.language = "en"
        self._engine = engine
        self._worker = worker
        self._id = stream_id
        self._fed = 0  # samples since open
        self._window_start = 0  # samples since open where the window (since the last cut) begins
        self._redecode = False  # the next feed makes the worker decode the window again
        self._broken: str | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def worker_pid(self) -> int:
        """The worker process decoding this stream (for monitoring and tests)."""
        return self._worker.pid

    def feed(self, pcm: np.ndarray) -> None:
        samples = _as_int16(pcm)
        if samples.size == 0:
            self._check()
            return
        # After a finalize, new audio restarts the utterance: the whole window is decoded again.
        cost = samples.size + (self._fed - self._window_start if self._redecode else 0)
        self._request(_FEED, samples.tobytes(), cost / _RATE, reply=False)
        self._fed += samples.size
        self._redecode = False

    def partial(self) -> Transcript:
        return self._transcript(self._request(_PARTIAL, b"", 0.0, reply=True))

    def finalize(self) -> Transcript:
        # A window shorter than a second is decoded only now (see _StreamDecoder).
        window = self._fed - self._window_start
        reply = self._request(_FINALIZE, b"", min(window, _CMN_SAMPLES) / _RATE, reply=True)
        self._redecode = True
        return self._transcript(reply)

    def cut(self, at: float) -> None:
        target = min(max(int(round(at * _RATE)), self._window_start), self._fed)
        if target <= self._window_start:
            self._check()
            return
        # The worker restarts the utterance on the audio after the cut.
        remaining = (self._fed - target) / _RATE
        self._request(_CUT, _CUT_PAYLOAD.pack(target), remaining, reply=False)
        self._window_start = target
        self._redecode = False

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._broken is None and self._worker.alive:
                self._worker.request(_CLOSE, self._id, reply=False, timeouts=self._engine._timeouts)
        except EngineError:
            pass  # the worker is gone or hung: it is being replaced, nothing to release
        finally:
            self._engine._release_worker(self._worker, stream=True)

    # --- internals ---------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise EngineError("the pocketsphinx stream is closed", retryable=False)
        if self._broken is None and not self._worker.alive:
            self._broken = f"the pocketsphinx worker serving this stream {self._worker.death}"
        if self._broken is not None:
            raise EngineError(f"{self._broken}; open a new stream", retryable=True)

    def _request(self, op: int, payload: bytes, cost_s: float, *, reply: bool) -> dict[str, Any]:
        self._check()
        try:
            answer = self._worker.request(
                op, self._id, payload, cost_s=cost_s, reply=reply, timeouts=self._engine._timeouts
            )
        except EngineError as exc:
            self._broken = str(exc)
            raise
        return answer or {}

    def _transcript(self, reply: dict[str, Any]) -> Transcript:
        if "error" in reply:
            # The decoder's state is unknown after a failure: this stream is done.
            self._broken = f"pocketsphinx failed to decode: {reply['error']}"
            raise EngineError(self._broken)
        return _to_transcript(reply["transcript"])


class _LocalStream(ASRStream):
    """A stream decoded in this process (``processes=False``: tools and tests)."""

    def __init__(self, decoder: _StreamDecoder, on_close: Callable[[Decoder], None]) -> None:
        self.language = "en"
        self._decoder: _StreamDecoder | None = decoder
        self._fed = 0
        self._on_close = on_close

    def feed(self, pcm: np.ndarray) -> None:
        samples = _as_int16(pcm)
        decoder = self._open()
        decoder.feed(samples.tobytes())
        decoder.catch_up()
        self._fed += samples.size

    def partial(self) -> Transcript:
        return self._call(lambda d: d.partial())

    def finalize(self) -> Transcript:
        return self._call(lambda d: d.finalize())

    def cut(self, at: float) -> None:
        self._open().cut(min(int(round(at * _RATE)), self._fed))

    def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            self._on_close(decoder.release())

    def _open(self) -> _StreamDecoder:
        if self._decoder is None:
            raise EngineError("the pocketsphinx stream is closed", retryable=False)
        return self._decoder

    def _call(self, method: Callable[[_StreamDecoder], dict[str, Any]]) -> Transcript:
        try:
            return _to_transcript(method(self._open()))
        except RuntimeError as exc:
            raise EngineError(f"pocketsphinx failed to decode: {exc}") from exc


def _return_decoder(pool: queue.Queue[Decoder], decoder: Decoder, keep: int) -> None:
    if pool.qsize() < keep:
        pool.put(decoder)


# --------------------------------------------------------------------- the parent's side


class _Worker:
    """One worker process (``python -m pipeline.engines.asr.pocketsphinx``) and its pipes.

    Not ``multiprocessing``: its spawn start method re-imports the caller's
    ``__main__``, which breaks scripts without a main guard. Requests go down stdin as
    a small header plus payload; replies come back on stdout as length-prefixed JSON,
    matched to their request by id on a reader thread. Requests that want no reply
    (feeding audio) cost one pipe write.
    """

    def __init__(
        self, options: dict[str, Any], spare_decoders: int, on_death: Callable[[_Worker], None]
    ) -> None:
        # The worker imports this module, so make sure the folder holding `pipeline`
        # is on its path even when polyvox runs from a checkout rather than an install,
        # and runs there: `-m` puts the working directory first on the path, and another
        # checkout's `pipeline` there would answer in another protocol. (Model paths
        # in ``options`` are absolute.)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.engines.asr.pocketsphinx", json.dumps(options), str(spare_decoders)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
        self.pid = self.process.pid
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin_fd = self.process.stdin.fileno()
        os.set_blocking(self._stdin_fd, False)
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.fcntl(self._stdin_fd, _F_SETPIPE_SZ, 1 << 20)
        self._on_death = on_death
        self.alive = True
        #: Why the worker is gone ("died (exit status -9)", "hung: ..."), once it is.
        self.death: str | None = None
        #: Open streams and running ``transcribe`` calls: the pool's measure of load.
        self.streams = 0
        self.transcribing = 0
        self._lock = threading.Lock()
        # Reentrant: a writer that times out kills the worker, which closes stdin under it.
        self._write_lock = threading.RLock()
        self._pending: dict[int, tuple[Future[dict[str, Any]], float]] = {}
        self._request_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        # Seconds of audio sent for decoding, and how much of it the worker had done by
        # its latest reply (it serves requests in order): the backlog a deadline allows for.
        self._queued_s = 0.0
        self._done_s = 0.0
        self._ready: Future[dict[str, Any]] = Future()
        threading.Thread(target=self._read_replies, name=f"pocketsphinx-{self.pid}", daemon=True).start()

    def new_stream_id(self) -> int:
        return next(self._stream_ids)

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker to load its decoders.

        Raises:
            EngineUnavailableError: it could not, or took longer than ``timeout``.
        """
        try:
            ready = self._ready.result(timeout=timeout)
        except FutureTimeout:
            self.kill(f"did not load its model within {timeout:.0f} s")
            raise EngineUnavailableError(f"pocketsphinx worker process {self.death}") from None
        except EngineError as exc:
            raise EngineUnavailableError(f"pocketsphinx worker process failed to start ({exc})") from None
        if ready.get("error"):
            self.close()
            raise EngineUnavailableError(f"pocketsphinx could not load its model ({ready['error']})")

    def request(
        self,
        op: int,
        stream_id: int,
        payload: bytes = b"",
        *,
        cost_s: float = 0.0,
        reply: bool = True,
        timeouts: _Timeouts,
    ) -> dict[str, Any] | None:
        """Send one request; wait for its reply (if ``reply``) within its deadline.

        ``cost_s`` is the audio (seconds) the request makes the worker decode; the
        deadline allows for it plus whatever earlier requests still queue ahead.

        Raises:
            EngineError: the worker is dead, died meanwhile or missed the deadline
                (then it is killed and replaced); retryable.
        """
        future: Future[dict[str, Any]] | None = None
        with self._lock:
            if not self.alive:
                raise EngineError(f"the pocketsphinx worker {self.death}", retryable=True)
            self._queued_s += cost_s
            timeout = timeouts.for_audio(self._queued_s - self._done_s)
            request_id = 0
            if reply:
                request_id = next(self._request_ids)
                future = Future()
                self._pending[request_id] = (future, self._queued_s)
        deadline = time.monotonic() + timeout
        data = _HEADER.pack(op, stream_id, request_id, len(payload)) + payload
        if not self._write_lock.acquire(timeout=timeout):
            raise self._hung(timeout)
        try:
            self._write(data, deadline)
        except TimeoutError:
            raise self._hung(timeout) from None
        except OSError as exc:  # broken pipe: it died; the reader says how
            self._die(f"died ({exc.strerror or exc})")
            raise EngineError(f"the pocketsphinx worker {self.death}", retryable=True) from None
        finally:
            self._write_lock.release()
        if future is None:
            return None
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise self._hung(timeout) from None

    def kill(self, reason: str) -> None:
        """Kill the process (a stopped one too) and fail what it had in flight."""
        self._die(reason)

    def close(self) -> None:
        """Stop the worker without reporting a death (the engine is closing)."""
        self._on_death = lambda worker: None
        self._die("was closed")

    # --- internals ---------------------------------------------------------------------

    def _hung(self, timeout: float) -> EngineError:
        self._die(f"hung (no answer within {timeout:.1f} s) and was killed")
        return EngineError(f"the pocketsphinx worker {self.death}", retryable=True)

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            _, writable, _ = select.select([], [self._stdin_fd], [], remaining)
            if not writable:
                raise TimeoutError
            try:
                written = os.write(self._stdin_fd, view)
            except BlockingIOError:
                continue
            view = view[written:]

    def _read_replies(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            self._ready.set_result(_read_message(stdout))
            while True:
                message = _read_message(stdout)
                with self._lock:
                    entry = self._pending.pop(int(message.get("id", 0)), None)
                    if entry is not None:
                        # Everything sent up to this request, less what the worker says
                        # it has still to decode.
                        done = entry[1] - float(message.get("backlog_s", 0.0))
                        self._done_s = max(self._done_s, done)
                if entry is not None:
                    entry[0].set_result(message)
        except (EOFError, OSError, ValueError):
            status = self.process.poll()
            if status is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    status = self.process.wait(timeout=1.0)
            self._die(f"died (exit status {status})" if status is not None else "stopped answering")
        finally:
            with contextlib.suppress(OSError):
                stdout.close()

    def _die(self, reason: str) -> None:
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            self.death = reason
            pending, self._pending = self._pending, {}
        error = EngineError(f"the pocketsphinx worker {reason}", retryable=True)
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)
        if not self._ready.done():
            self._ready.set_exception(error)
        with contextlib.suppress(OSError):
            self.process.kill()  # SIGKILL: ends a stopped (SIGSTOP) process too
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.process.wait(timeout=5.0)
        # A writer still in select() sees the dead pipe at once (EPIPE) and lets go.
        with self._write_lock, contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        self._on_death(self)


def _read_message(stream: IO[bytes]) -> dict[str, Any]:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("worker process ended")
    (size,) = struct.unpack("<I", header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("worker process ended")
    message: dict[str, Any] = json.loads(body)
    return message


def _raise_worker_error(reply: dict[str, Any] | None) -> None:
    if reply is not None and "error" in reply:
        raise EngineError(f"pocketsphinx failed to decode: {reply['error']}")


def _to_transcript(result: dict[str, Any]) -> Transcript:
    words = [Word(text, start, end) for text, start, end, _ in result["words"]]
    posteriors = [p for *_, p in result["words"] if p is not None]
    extra: dict[str, Any] = {}
    if result.get("posterior") is not None:
        extra = {"posteriors": posteriors, "utterance_posterior": result["posterior"]}
    return Transcript(
        text=result["text"],
        language="en",
        punctuated=False,
        confidence=result.get("confidence"),
        extra=extra,
        words=words,
    )


# ---------------------------------------------------------------- decoding (either side)


def _new_decoder(options: dict[str, Any]) -> Decoder:
    """A decoder for ``options`` that also knows the grammar of the CMN estimate."""
    from pocketsphinx import Decoder

    try:
        decoder = Decoder(**options)
        decoder.add_jsgf_string(_CMN_SEARCH, _CMN_GRAMMAR)
    except (RuntimeError, ValueError) as exc:
        raise EngineUnavailableError(f"pocketsphinx could not load its model ({exc})") from exc
    return decoder


class _StreamDecoder:
    """Incremental decoding of one stream on one ``Decoder``.

    Keeps the audio since the last cut. ``feed`` only appends; ``work`` decodes the next
    slice of what is pending (the worker calls it between requests, so a long catch-up
    never holds up an answer), ``catch_up`` all of it. Once the window holds a second of
    sound, the cepstral mean is estimated from it and the window is decoded from its
    start with that mean; ``finalize`` ends the utterance (pocketsphinx cannot resume
    one), so audio fed after it restarts the utterance and decodes the whole window
    again. A window finalized before it holds a second of sound is decoded only then,
    with the mean of what it has. Results are plain dicts (they cross the process
    boundary as JSON).
    """

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._lm_search = decoder.current_search()
        self._frame_rate = float(decoder.config["frate"])
        self._audio = bytearray()  # int16 samples since the last cut
        self._offset = 0  # samples since open at which ``_audio`` begins
        self._cmn: str | None = None  # the stream's cepstral mean, once estimated
        self._in_utt = False
        self._decoded = 0  # samples of ``_audio`` the current utterance has seen
        self._sound_from: int | None = None  # first non-silent sample of ``_audio``
        self._peak = 0
        self._final: dict[str, Any] | None = None
        self._error: str | None = None

    @property
    def _samples(self) -> int:
        return len(self._audio) // 2

    def feed(self, data: bytes) -> None:
        chunk = np.frombuffer(data, dtype="<i2")
        if chunk.size == 0 or self._error is not None:
            return
        self._note_sound(chunk, self._samples)
        self._audio += data
        self._final = None

    def backlog(self) -> int:
        """Samples ``work`` would decode now (0: up to date, or waiting for sound)."""
        if self._error is not None:
            return 0
        if self._in_utt:
            return self._samples - self._decoded
        if self._final is not None or (self._cmn is None and not self._cmn_ready()):
            return 0  # finalized and nothing new since, or waiting for a second of sound
        return self._samples  # the utterance (re)starts from the window's start

    def work(self, limit: int) -> None:
        """Decode up to ``limit`` more samples of the backlog."""
        if self.backlog() == 0:
            return
        self._guard(lambda: self._work(limit))

    def catch_up(self) -> None:
        self.work(self._samples)

    def partial(self) -> dict[str, Any]:
        """The hypothesis of what is decoded so far (the worker keeps up in real time)."""
        self._raise_error()
        if self._final is not None:
            return self._final
        if not self._in_utt or self._peak <= _DIGITAL_SILENCE:
            return _empty()
        return self._result(final=False)

    def finalize(self) -> dict[str, Any]:
        self._raise_error()
        if self._final is not None:
            return self._final
        if self._samples < _MIN_SAMPLES or self._peak <= _DIGITAL_SILENCE:
            # Nothing to hear; an utterance in progress just goes on with the next audio.
            self._final = _empty()
            return self._final
        self.catch_up()
        self._raise_error()
        if not self._in_utt:
            # Under a second of sound: estimate the mean from what there is, just for now.
            start = self._sound_from or 0
            self._guard(lambda: self._restart(self._cmn or self._estimate_cmn(start, self._samples)))
            self._guard(lambda: self._process(self._samples))
            self._raise_error()
        self._guard(self.decoder.end_utt)
        self._raise_error()
        self._in_utt = False
        self._final = self._result(final=True)
        return self._final

    def cut(self, at_sample: int) -> None:
        drop = min(at_sample - self._offset, self._samples)
        if drop <= 0 or self._error is not None:
            return
        if self._in_utt:
            self._guard(self.decoder.end_utt)
            self._in_utt = False
        del self._audio[: 2 * drop]
        self._offset += drop
        self._final = None
        self._peak, self._sound_from = 0, None
        self._note_sound(np.frombuffer(self._audio, dtype="<i2"), 0)

    def release(self) -> Decoder:
        """End any utterance and hand the decoder back (for the next stream)."""
        if self._in_utt:
            with contextlib.suppress(RuntimeError):
                self.decoder.end_utt()
            self._in_utt = False
        return self.decoder

    # --- internals ---------------------------------------------------------------------

    def _cmn_ready(self) -> bool:
        return self._sound_from is not None and self._samples - self._sound_from >= _CMN_SAMPLES

    def _work(self, limit: int) -> None:
        if not self._in_utt:
            if self._cmn is None:
                assert self._sound_from is not None
                self._cmn = self._estimate_cmn(self._sound_from, self._sound_from + _CMN_SAMPLES)
            self._restart(self._cmn)
        self._process(min(self._samples, self._decoded + limit))

    def _restart(self, cmn: str) -> None:
        decoder = self.decoder
        # The front end carries state from one utterance into the next, so without this
        # the same audio could decode differently depending on what the decoder heard
        # before (another stream's speaker, even).
        decoder.reinit_feat()
        decoder.set_cmn(cmn)
        decoder.start_utt()
        self._in_utt = True
        self._decoded = 0

    def _process(self, end: int) -> None:
        if end > self._decoded:
            self.decoder.process_raw(bytes(self._audio[2 * self._decoded : 2 * end]), full_utt=False)
            self._decoded = end

    def _estimate_cmn(self, start: int, end: int) -> str:
        """The cepstral mean of ``_audio[start:end]`` (a features-only pass)."""
        decoder = self.decoder
        decoder.activate_search(_CMN_SEARCH)
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(bytes(self._audio[2 * start : 2 * end]), no_search=True, full_utt=True)
            cmn: str = decoder.get_cmn(True)
        finally:
            decoder.end_utt()
            decoder.activate_search(self._lm_search)
        return cmn

    def _result(self, *, final: bool) -> dict[str, Any]:
        hyp = self.decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return _empty()
        offset = self._offset / _RATE
        words: list[list[Any]] = []
        for seg in self.decoder.seg() or []:
            if _is_filler(seg.word):
                continue
            # Python bindings already turn log posteriors into probabilities; they mean
            # something only once the utterance has ended (the lattice exists).
            posterior = min(max(float(seg.prob), 0.0), 1.0) if final else None
            words.append([
                _strip_alternate(seg.word),
                offset + seg.start_frame / self._frame_rate,
                offset + (seg.end_frame + 1) / self._frame_rate,
                posterior,
            ])
        confidence = float(np.mean([w[3] for w in words])) if final and words else None
        return {
            "text": hyp.hypstr,
            "words": words,
            "confidence": confidence,
            "posterior": float(hyp.prob) if final else None,
        }

    def _note_sound(self, chunk: np.ndarray, at: int) -> None:
        if chunk.size == 0:
            return
        magnitude = np.abs(chunk.astype(np.int32))
        self._peak = max(self._peak, int(magnitude.max()))
        if self._sound_from is None:
            loud = np.flatnonzero(magnitude > _DIGITAL_SILENCE)
            if loud.size:
                self._sound_from = at + int(loud[0])

    def _guard(self, step: Callable[[], Any]) -> None:
        try:
            step()
        except RuntimeError as exc:
            self._error = str(exc) or "decoder error"
            self.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(self._error)


def _empty() -> dict[str, Any]:
    return {"text": "", "words": [], "confidence": None, "posterior": None}


def _decode_utterance(decoder: Decoder, data: bytes) -> dict[str, Any]:
    """One whole utterance: exactly what a stream fed ``data`` gives at ``finalize``."""
    stream = _StreamDecoder(decoder)
    try:
        stream.feed(data)
        return stream.finalize()
    finally:
        stream.release()


# ---------------------------------------------------------------------- the worker process


def _worker_main(options: dict[str, Any], spare: int) -> None:
    """The worker process: load decoders, then serve requests until stdin closes.

    Requests are served in order. Between two requests the worker decodes one slice
    (50 ms of audio) of a stream with audio pending, in turn: decoding keeps pace with
    the audio however requests arrive, and a request waits for at most one slice, so
    ``partial`` answers at once even while a stream catches up on a second of audio.
    Every reply says how much audio is still pending (the parent's deadlines allow for
    it). A failing stream records its error and reports it on its next request that has
    a reply; other streams are unaffected.
    """
    stdout = sys.stdout.buffer
    try:
        free = [_new_decoder(options) for _ in range(spare)]
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        _write_message(stdout, {"id": 0, "error": str(exc)})
        return
    _write_message(stdout, {"id": 0, "ready": True})
    requests = _RequestReader(sys.stdin.fileno())
    streams: dict[int, _StreamDecoder] = {}
    turn = 0
    worked = True  # a slice since the last request: the next request goes first

    def borrow() -> Decoder:
        return free.pop() if free else _new_decoder(options)

    def give_back(decoder: Decoder) -> None:
        if len(free) < spare:  # beyond that, let it go: a decoder is ~90 MB
            free.append(decoder)

    while True:
        pending = [stream for stream in streams.values() if stream.backlog()]
        if pending and (not worked or not requests.ready()):
            pending[turn % len(pending)].work(_SLICE_SAMPLES)
            turn += 1
            worked = True
            continue
        request = requests.next()
        if request is None:
            return
        worked = False
        op, stream_id, request_id, payload = request
        reply: dict[str, Any] = {"id": request_id}
        try:
            if op == _OPEN:
                streams[stream_id] = _StreamDecoder(borrow())
            elif op == _FEED:
                streams[stream_id].feed(payload)
            elif op == _PARTIAL:
                reply["transcript"] = streams[stream_id].partial()
            elif op == _FINALIZE:
                reply["transcript"] = streams[stream_id].finalize()
            elif op == _CUT:
                streams[stream_id].cut(_CUT_PAYLOAD.unpack(payload)[0])
            elif op == _CLOSE:
                stream = streams.pop(stream_id, None)
                if stream is not None:
                    give_back(stream.release())
            elif op == _TRANSCRIBE:
                decoder = borrow()
                try:
                    reply["transcript"] = _decode_utterance(decoder, payload)
                finally:
                    give_back(decoder)
            elif op == _WARMUP:
                for decoder in list(free):
                    _decode_utterance(decoder, payload)
            else:
                reply["error"] = f"unknown request {op}"
        except KeyError:
            reply["error"] = f"no stream {stream_id} in this worker"
        except (RuntimeError, EngineUnavailableError) as exc:
            reply["error"] = str(exc) or type(exc).__name__
        if request_id:
            reply["backlog_s"] = sum(stream.backlog() for stream in streams.values()) / _RATE
            _write_message(stdout, reply)


class _RequestReader:
    """Requests from a pipe, readable without blocking (to decode while none waits)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._eof = False

    def ready(self) -> bool:
        """Whether a request (or the end of input) is there without waiting."""
        return self._complete() or self._eof or self._fill(0.0)

    def next(self) -> tuple[int, int, int, bytes] | None:
        """The next request, waiting for it; ``None`` once the parent closed the pipe."""
        while not self._complete():
            if self._eof or not self._fill(None):
                return None
        op, stream_id, request_id, size = _HEADER.unpack_from(self._buffer)
        payload = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
        del self._buffer[: _HEADER.size + size]
        return op, stream_id, request_id, payload

    def _complete(self) -> bool:
        if len(self._buffer) < _HEADER.size:
            return False
        return len(self._buffer) >= _HEADER.size + _HEADER.unpack_from(self._buffer)[3]

    def _fill(self, timeout: float | None) -> bool:
        readable, _, _ = select.select([self._fd], [], [], timeout)
        if not readable:
            return False
        data = os.read(self._fd, 1 << 20)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True


def _write_message(stream: IO[bytes], message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


# ------------------------------------------------------------------------------ helpers


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


def _peak(samples: np.ndarray) -> int:
    return int(np.max(np.abs(samples.astype(np.int32)))) if samples.size else 0


def _is_filler(word: str) -> bool:
    # <s>, </s>, <sil> and noise words such as [NOISE] or ++BREATH++.
    return word.startswith(("<", "[", "+"))


def _strip_alternate(word: str) -> str:
    # The dictionary names alternate pronunciations "word(2)".
    return word.split("(", 1)[0] if word.endswith(")") else word


if __name__ == "__main__":
    _worker_main(json.loads(sys.argv[1]), int(sys.argv[2]))
