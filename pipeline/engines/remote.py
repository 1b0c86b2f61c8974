"""Engines on a Ray Serve application: the room server's side of ``engines.backend: ray``.

:class:`RemoteASREngine`, :class:`RemoteMTEngine` and :class:`RemoteTTSEngine` implement
the ordinary engine interfaces, so processors, sessions and voices use them exactly as
local engines: their blocking methods call the stage's deployment handle (they run in
the processors' worker threads), and their capabilities (``languages``, ``pairs()``,
``sample_rate``, ``supports_streaming``, ``clones_voices``) are what the deployed engine
reports (``info()``), read once at :meth:`~pipeline.engines.base.Engine.load`.

* **TTS** chunks stream from the replica (``handle.options(stream=True)``) and are
  yielded as they arrive. Over Ray Client (``ray://``), which cannot stream, each call
  returns every chunk at once.
* **Streaming ASR**: a remote stream re-decodes through ``transcribe``
  (:class:`~pipeline.engines.base.RedecodingASRStream`) instead of keeping decoder state
  on one replica. Every request is then stateless: Serve may send it to any replica,
  batch it with other rooms' requests, and a replica that dies costs one retried decode,
  not the stream. The price is resending the audio since the last cut with each partial
  decode (32 kB per second of speech; the processor cuts committed clauses, so the
  window stays a few seconds long).

Failures (see :class:`RayEnginesConnection`): a replica that dies during a call is
retried once (Serve routes the retry to a healthy replica, or waits for the replacement);
a TTS stream is retried only before its first chunk (a listener must not hear a sentence
start twice) and otherwise fails. An application that is gone (undeployed, redeploying)
fails each call at once with :class:`EnginesUnreachableError` (retryable), which the
processors report like any engine error; the handles reconnect by themselves when it is
back. At start-up, an unreachable cluster or a missing application is one
:class:`~pipeline.errors.EngineUnavailableError` line.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from pipeline.engines.base import (
    ASREngine,
    ASRStream,
    MTEngine,
    RedecodingASRStream,
    Transcript,
    TTSEngine,
)
from pipeline.errors import (
    EngineError,
    EngineUnavailableError,
    PolyvoxError,
    UnsupportedLanguageError,
)

__all__ = [
    "EnginesUnreachableError",
    "RayEnginesConnection",
    "RemoteASREngine",
    "RemoteMTEngine",
    "RemoteTTSEngine",
    "ReplicaDiedError",
    "init_ray",
    "remote_engine",
]

_INSTALL_HINT = "engines.backend: ray needs Ray Serve: pip install 'polyvox[ray]'"
_START_HINT = "start it with `polyvox engines serve` (README: Engines on a Ray cluster)"


class ReplicaDiedError(EngineError):
    """The replica working on a call died (retryable: another replica can take it)."""

    retryable = True


class EnginesUnreachableError(EngineError):
    """The engines application cannot be reached now (retryable: it may come back)."""

    retryable = True


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return ray, serve


class RayEnginesConnection:
    """One process's connection to the engines application, shared by its remote engines.

    Args:
        address: The Ray cluster (``auto``, ``HOST:PORT`` of the head's GCS, or
            ``ray://HOST:PORT``); ``None`` is ``auto``. Ignored when this process is
            already connected to Ray (``ray.init`` was called: tests, benchmarks).
        app_name: The Serve application ``polyvox engines serve`` deployed.
        connect_timeout_s: Longest connecting and reading the stages' capabilities may take.
        call_timeout_s: Longest one call may take (a safety net: processors have deadlines).
    """

    def __init__(
        self,
        address: str | None = None,
        app_name: str = "polyvox",
        *,
        connect_timeout_s: float = 20.0,
        call_timeout_s: float = 120.0,
    ) -> None:
        self.address = address or "auto"
        self.app_name = app_name
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._owns_ray = False
        self._client_mode = False
        self._closed = False
        #: Calls retried because their replica died, per stage.
        self.retries: dict[str, int] = {}
        #: Calls (and TTS streams) under way now, per stage.
        self.in_flight: dict[str, int] = {}

    # -- connecting ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._handles)

    @property
    def streams(self) -> bool:
        """Whether TTS chunks stream (not over Ray Client)."""
        return not self._client_mode

    def connect(self) -> None:
        """Reach the cluster and the application and read each stage's capabilities.

        Raises:
            ImportError: Ray Serve is not installed (the message names the extra).
            EngineUnavailableError: no cluster answers at ``address``, or it runs no
                application ``app_name`` (one line saying what to do).
        """
        with self._lock:
            if self._handles:
                return
            ray, serve = _import_ray()
            deadline = time.monotonic() + self.connect_timeout_s
            if not ray.is_initialized():
                init_ray(self.address, self.connect_timeout_s)
                self._owns_ray = True
            self._client_mode = _client_mode()
            where = f"the Ray cluster at {self.address}" if self._owns_ray else "this Ray cluster"
            try:
                ingress = serve.get_app_handle(self.app_name)
                infos = ingress.info.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
                handles = {kind: serve.get_deployment_handle(kind, app_name=self.app_name) for kind in infos}
            except Exception as exc:  # noqa: BLE001 - one line, whatever Ray raised
                raise EngineUnavailableError(
                    f"no engines application '{self.app_name}' answers on {where} "
                    f"({_first_line(exc)}); {_START_HINT}"
                ) from None
            self._info = infos
            self._handles = handles
            logger.info(
                f"engines app '{self.app_name}' on {where}: "
                + ", ".join(f"{k} {v.get('name')}" for k, v in infos.items())
                + (" (Ray Client: TTS is not streamed)" if self._client_mode else "")
            )

    def info(self, kind: str) -> dict[str, Any]:
        """What the ``kind`` stage's engine reported (after :meth:`connect`)."""
        self.connect()
        return self._info[kind]

    def close(self) -> None:
        """Forget the handles; disconnect from Ray if this connection connected it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._handles = {}
            if self._owns_ray:
                ray, _ = _import_ray()
                ray.shutdown()
                self._owns_ray = False

    # -- calls ---------------------------------------------------------------------------

    def handle(self, kind: str) -> Any:
        self.connect()
        return self._handles[kind]

    def call(self, kind: str, method: str, *args: Any) -> Any:
        """``method(*args)`` on a replica of ``kind``, blocking; retried once if the replica dies.

        Raises:
            The engine's own error (``UnsupportedLanguageError``, ``EngineError``...);
            ReplicaDiedError: the retry's replica died too.
            EnginesUnreachableError: the application is not there (now).
            EngineError: the call took longer than ``call_timeout_s``, or Ray failed.
        """
        handle = self.handle(kind)
        self._count(kind, 1)
        try:
            for attempt in (1, 2):
                response = getattr(handle, method).remote(*args)
                try:
                    return response.result(timeout_s=self.call_timeout_s)
                except BaseException as exc:  # noqa: BLE001 - translated below
                    if isinstance(exc, TimeoutError):
                        response.cancel()
                    error = self._translate(kind, method, exc)
                    if isinstance(error, ReplicaDiedError) and attempt == 1:
                        self._note_retry(kind, method, error)
                        continue
                    raise error from None
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._count(kind, -1)

    def stream(self, kind: str, method: str, *args: Any) -> Iterator[Any]:
        """Items of a streaming ``method`` as the replica yields them.

        Retried once when the replica dies before the first item; after it, the stream
        fails (the caller has used what came). Closing the iterator cancels the request.
        """
        handle = self.handle(kind).options(stream=True)
        delivered = 0
        self._count(kind, 1)
        try:
            for attempt in (1, 2):
                responses = getattr(handle, method).remote(*args)
                finished = False
                try:
                    for item in responses:
                        delivered += 1
                        yield item
                    finished = True
                    return
                except GeneratorExit:
                    raise
                except BaseException as exc:  # noqa: BLE001 - translated below
                    finished = True
                    error = self._translate(kind, method, exc)
                    if isinstance(error, ReplicaDiedError) and delivered == 0 and attempt == 1:
                        self._note_retry(kind, method, error)
                        continue
                    if isinstance(error, ReplicaDiedError):
                        error = ReplicaDiedError(f"{error} after {delivered} chunks")
                    raise error from None
                finally:
                    if not finished:
                        responses.cancel()
        finally:
            self._count(kind, -1)

    def _count(self, kind: str, change: int) -> None:
        with self._counts_lock:
            self.in_flight[kind] = self.in_flight.get(kind, 0) + change

    def _note_retry(self, kind: str, method: str, error: BaseException) -> None:
        self.retries[kind] = self.retries.get(kind, 0) + 1
        logger.warning(f"{kind} replica failed during {method} ({error}); retrying once")

    def _translate(self, kind: str, method: str, exc: BaseException) -> BaseException:
        """A Ray or Serve exception as the polyvox error a processor understands."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
        import ray.exceptions as rex
        from ray.serve import exceptions as sex

        if isinstance(exc, rex.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, PolyvoxError):
                return cause
            if isinstance(cause, (rex.RayActorError, rex.WorkerCrashedError)):
                return ReplicaDiedError(f"{kind} replica died: {_first_line(cause)}")
            return EngineError(f"{kind} replica failed in {method}: {_first_line(cause or exc)}")
        if isinstance(
            exc,
            (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, sex.ReplicaUnavailableError),
        ):
            return ReplicaDiedError(f"{kind} replica died: {type(exc).__name__}")
        if isinstance(exc, (sex.DeploymentUnavailableError, sex.BackPressureError, sex.RayServeException)):
            return EnginesUnreachableError(
                f"the engines app '{self.app_name}' cannot take {kind} requests now "
                f"({type(exc).__name__}); interpretation resumes when it is back"
            )
        if isinstance(exc, TimeoutError):
            return EngineError(f"remote {kind} {method} took longer than {self.call_timeout_s:.0f} s")
        if isinstance(exc, (ConnectionError, rex.RaySystemError)):
            return EnginesUnreachableError(f"the Ray cluster is unreachable: {_first_line(exc)}")
        if isinstance(exc, PolyvoxError):
            return exc
        return EngineError(f"remote {kind} {method} failed: {type(exc).__name__}: {_first_line(exc)}")


class _RemoteEngineMixin:
    """Capabilities read from the deployment at ``load``."""

    kind = ""

    def __init__(self, connection: RayEnginesConnection) -> None:
        self.connection = connection
        self._info: dict[str, Any] | None = None

    @property
    def remote_info(self) -> dict[str, Any]:
        """The deployment's ``info()``; connects on first use."""
        if self._info is None:
            self._info = self.connection.info(self.kind)
        return self._info

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(self.remote_info.get("name") or self.kind)

    def load(self) -> None:
        self.remote_info  # noqa: B018 - connects and reads the capabilities

    def warmup(self) -> None:
        # Replicas warm up before they take requests; here only the route is set up.
        self.load()

    def close(self) -> None:
        self.connection.close()


class RemoteASREngine(_RemoteEngineMixin, ASREngine):  # type: ignore[override]  # name: a property
    """ASR on the ``asr`` deployment; streams re-decode through ``transcribe``."""

    kind = "asr"

    @property
    def languages(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.remote_info.get("languages", ()))

    @property
    def sample_rate(self) -> int:  # type: ignore[override]
        return int(self.remote_info.get("sample_rate", 16000))

    @property
    def supports_streaming(self) -> bool:  # type: ignore[override]
        return bool(self.remote_info.get("supports_streaming", False))

    @property
    def detects_language(self) -> bool:  # type: ignore[override]
        return bool(self.remote_info.get("detects_language", False))

    def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        """Spoken-language identification on a replica (engines with ``detects_language``)."""
        if not self.detects_language:
            raise NotImplementedError(f"asr engine '{self.name}' cannot identify spoken languages")
        ranked = self.connection.call(
            "asr", "detect_language", np.ascontiguousarray(pcm, dtype=np.int16), sample_rate
        )
        return [(str(code), float(p)) for code, p in ranked]

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        if language not in self.languages:
            raise UnsupportedLanguageError(
                f"asr engine '{self.name}' does not recognise '{language}' "
                f"(it knows: {', '.join(sorted(self.languages))})"
            )
        return self.connection.call("asr", "transcribe", np.ascontiguousarray(pcm, dtype=np.int16), sample_rate, language)

    def open_stream(self, language: str) -> ASRStream:
        if not self.supports_streaming:
            return super().open_stream(language)
        if language not in self.languages:
            raise UnsupportedLanguageError(f"asr engine '{self.name}' does not recognise '{language}'")
        return RedecodingASRStream(self, language)


class RemoteMTEngine(_RemoteEngineMixin, MTEngine):  # type: ignore[override]  # name: a property
    """MT on the ``mt`` deployment."""

    kind = "mt"

    def __init__(self, connection: RayEnginesConnection) -> None:
        super().__init__(connection)
        self._pairs: set[tuple[str, str]] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        return sorted(self._pair_set())

    def _pair_set(self) -> set[tuple[str, str]]:
        if self._pairs is None:
            self._pairs = {(str(s), str(t)) for s, t in self.remote_info.get("pairs", ())}
        return self._pairs

    def supports(self, source: str, target: str) -> bool:
        return (source, target) in self._pair_set()

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        if not self.supports(source, target):
            raise UnsupportedLanguageError(f"mt engine '{self.name}' cannot translate {source}→{target}")
        return self.connection.call("mt", "translate", list(texts), source, target)


class RemoteTTSEngine(_RemoteEngineMixin, TTSEngine):  # type: ignore[override]  # name: a property
    """TTS on the ``tts`` deployment; chunks stream as the replica makes them."""

    kind = "tts"

    @property
    def languages(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.remote_info.get("languages", ()))

    @property
    def sample_rate(self) -> int:
        return int(self.remote_info.get("sample_rate", 16000))

    @property
    def clones_voices(self) -> bool:  # type: ignore[override]
        return bool(self.remote_info.get("clones_voices", False))

    def synthesize(self, text: str, language: str, voice: Any | None = None) -> Iterator[np.ndarray]:
        if language not in self.languages:
            raise UnsupportedLanguageError(f"tts engine '{self.name}' does not speak '{language}'")
        if not self.connection.streams:
            return self._all_at_once(text, language, voice)
        return self.connection.stream("tts", "synthesize", text, language, voice)

    def _all_at_once(self, text: str, language: str, voice: Any | None) -> Iterator[np.ndarray]:
        # A generator: the call happens when iterated (in the processor's worker thread).
        yield from self.connection.call("tts", "synthesize_all", text, language, voice)

    def condition(self, pcm: np.ndarray, sample_rate: int) -> Any:
        """The voice latents of ``pcm``, computed by a replica (``VoiceCloner``).

        Raises:
            EngineError: the deployed engine does not clone voices, or the model failed.
        """
        return self.connection.call("tts", "condition", np.ascontiguousarray(pcm, dtype=np.int16), sample_rate)


_REMOTE: dict[str, type[RemoteASREngine] | type[RemoteMTEngine] | type[RemoteTTSEngine]] = {
    "asr": RemoteASREngine,
    "mt": RemoteMTEngine,
    "tts": RemoteTTSEngine,
}


def remote_engine(kind: str, connection: RayEnginesConnection) -> ASREngine | MTEngine | TTSEngine:
    """The remote engine of stage ``kind`` (``asr``, ``mt`` or ``tts``) over ``connection``."""
    return _REMOTE[kind](connection)


# -- helpers ---------------------------------------------------------------------------


def init_ray(address: str, timeout_s: float = 20.0) -> None:
    """Connect this process to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``
    or ``ray://HOST:PORT``), failing within ``timeout_s`` with one line.

    Raises:
        ImportError: Ray is not installed.
        EngineUnavailableError: nothing answers there, no cluster runs here (``auto``),
            or the cluster refused or did not answer (an auth token mismatch).
    """
    ray, _ = _import_ray()
    if address != "auto":
        _probe(address, min(5.0, timeout_s))
    _enable_token_auth()
    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    # ray.init retries an unreachable or refusing GCS for minutes: bound it.
    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "error" not in outcome:
        raise EngineUnavailableError(
            f"engines.address {address}: the Ray cluster did not answer in {timeout_s:.0f} s "
            "(an auth token mismatch looks like this too: RAY_AUTH_TOKEN or ~/.ray/auth_token "
            "must be the cluster's)"
        )
    error = outcome["error"]
    if error is not None:
        hint = (
            "no Ray cluster runs on this machine (join one with `ray start --address=HEAD:6379`, "
            "or set engines.address)"
            if address == "auto"
            else _first_line(error)
        )
        raise EngineUnavailableError(f"engines.address {address}: {hint}; {_START_HINT}") from None


def _client_mode() -> bool:
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except Exception:  # noqa: BLE001 - no client support: not a client
        return False


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast, with one line, when nothing listens at ``address`` (ray.init would
    retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EngineUnavailableError(f"engines.address {address}: nothing answers there ({reason}); {_START_HINT}") from None


def _enable_token_auth() -> None:
    """Send the Ray auth token when one is available here: clusters of Ray >= 2.5x require
    one by default, and connecting to an explicit address does not turn it on by itself."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the environment variable, before ray.init
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    # Sets RAY_AUTH_MODE=token and refreshes Ray's already-loaded configuration.
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _first_line(exc: BaseException | object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
