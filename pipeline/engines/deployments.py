"""The model stages as Ray Serve deployments (``engines.backend: ray``).

Each replica builds the stage's engine exactly as a room server would (the composition
root hands each stage a builder: ``bot.engines_app`` builds from the same
``asr:``/``mt:``/``tts:`` settings as ``bot.app.load_engines``), loads it and warms it up
before it takes requests; the engine classes are not changed. What the deployments add:

* **cross-room batching** with ``@serve.batch``: ASR and MT requests from every room
  server arriving within ``batch_wait_timeout_s`` become one engine call
  (``transcribe_batch``; one ``translate`` per language pair). Engines that do not batch
  on their device get the batch's items concurrently instead, so a pool of decoders
  (pocketsphinx) stays busy. A failing item fails alone: the batch is retried item by
  item and each caller gets its own result or error.
* **streamed TTS**: ``synthesize`` is an async generator: each chunk leaves the replica
  as soon as the engine yields it (``handle.options(stream=True)`` on the caller's side).
  Cancelling the request closes the engine's iterator, which frees the model.
* **capabilities**: ``info()`` tells room servers what the engine can do (languages,
  pairs, sample rate, streaming, voice cloning) and which process serves it.

:func:`build_engines_app` binds the three stages behind a small ingress deployment
(``engines``) into one Serve application; ``bot.engines_app`` deploys it and
``pipeline.engines.remote`` is the room servers' side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from loguru import logger

try:
    from ray import serve
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("engines.backend: ray needs Ray Serve: pip install 'polyvox[ray]'") from exc

from pipeline.engines.base import ASREngine, Engine, MTEngine, Transcript, TTSEngine
from pipeline.errors import EngineError

__all__ = [
    "STAGE_DEPLOYMENTS",
    "ASRDeployment",
    "EnginesIngress",
    "MTDeployment",
    "StageSpec",
    "TTSDeployment",
    "build_engines_app",
]

#: The ingress deployment's name; the stages' deployments are named ``asr``, ``mt``, ``tts``.
INGRESS_NAME = "engines"

#: One item's outcome inside a batch: ``(True, result)`` or ``(False, exception)``.
_Outcome = tuple[bool, Any]


@dataclass
class StageSpec:
    """How one stage is built and deployed.

    Attributes:
        build: Builds the stage's engine (not loaded), in the replica; it is pickled
            there, so a module-level function (or a ``functools.partial`` of one).
        name: The engine's configured name, for logs.
        num_replicas: Fixed replica count (ignored with ``autoscaling``).
        autoscaling: Serve's ``autoscaling_config`` (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``), or ``None``.
        num_cpus: CPUs reserved per replica.
        num_gpus: GPUs (or a fraction of one) per replica.
        max_ongoing_requests: Requests one replica works on at once.
        max_batch_size: Most requests merged into one engine call.
        batch_wait_timeout_s: Longest the first request of a batch waits for others.
        env: Environment variables of the replicas' processes.
    """

    build: Callable[[], Engine]
    name: str = ""
    num_replicas: int = 1
    autoscaling: dict[str, Any] | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 16
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    env: dict[str, str] = field(default_factory=dict)

    def deployment_options(self, name: str) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options`` for this stage."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.env:
            actor["runtime_env"] = {"env_vars": dict(self.env)}
        options: dict[str, Any] = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": actor,
            # Loading a model (and its warm-up) can take minutes on a cold node.
            "health_check_timeout_s": 60,
            "graceful_shutdown_timeout_s": 20,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = dict(self.autoscaling)
        else:
            options["num_replicas"] = self.num_replicas
        return options


class _EngineReplica:
    """What every stage's replica does: build, load and warm up the engine; describe it."""

    kind: ClassVar[str] = ""

    def __init__(self, build: Callable[[], Engine], batching: dict[str, Any]) -> None:
        started = time.monotonic()
        self.engine: Engine = build()
        self.engine.load()
        self.engine.warmup()
        self._requests = 0
        self._batches = 0
        self._largest_batch = 0
        self._active = 0
        self._batching = batching
        logger.info(
            f"{self.kind} replica (pid {os.getpid()}): engine '{self.engine.name}' ready "
            f"in {time.monotonic() - started:.1f} s"
        )

    def _configure_batch(self, method: Any) -> None:
        method.set_max_batch_size(int(self._batching.get("max_batch_size", 8)))
        method.set_batch_wait_timeout_s(float(self._batching.get("batch_wait_timeout_s", 0.01)))

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """Counts a request from its arrival here until it is answered (``stats``)."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1

    def _counted(self, size: int) -> None:
        self._requests += size
        self._batches += 1
        self._largest_batch = max(self._largest_batch, size)

    def info(self) -> dict[str, Any]:
        """The engine's name and capabilities, and where this replica runs."""
        return {
            "kind": self.kind,
            "name": self.engine.name or type(self.engine).__name__,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "replica": _replica_id(),
        }

    def stats(self) -> dict[str, Any]:
        """Requests and batches this replica has served (``largest_batch``: most requests
        merged into one engine call; ``active``: requests here now, waiting or running)."""
        return {
            "pid": os.getpid(),
            "replica": _replica_id(),
            "active": self._active,
            "requests": self._requests,
            "batches": self._batches,
            "largest_batch": self._largest_batch,
        }

    def __del__(self) -> None:
        # Serve drops the replica object at shutdown: stop the engine's child processes.
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.close()
            except Exception as exc:  # noqa: BLE001 - shutting down regardless
                logger.warning(f"closing the {self.kind} engine failed: {exc}")


class ASRDeployment(_EngineReplica):
    """Speech recognition; concurrent requests from every room are batched."""

    kind = "asr"

    def __init__(self, build: Callable[[], Engine], batching: dict[str, Any]) -> None:
        super().__init__(build, batching)
        self._configure_batch(self._transcribe_many)
        asr = self.asr
        # transcribe_batch only helps engines that batch on their device (NeMo); others
        # get the batch's items concurrently (a pool of decoders works on them at once).
        self._device_batches = type(asr).transcribe_batch is not ASREngine.transcribe_batch

    @property
    def asr(self) -> ASREngine:
        assert isinstance(self.engine, ASREngine)
        return self.engine

    def info(self) -> dict[str, Any]:
        asr = self.asr
        return {
            **super().info(),
            "languages": sorted(asr.languages),
            "sample_rate": int(asr.sample_rate),
            "supports_streaming": bool(asr.supports_streaming),
            "detects_language": bool(getattr(asr, "detects_language", False)),
        }

    async def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """``ASREngine.transcribe`` of one utterance (batched with other rooms')."""
        with self._serving():
            return _unwrap(await self._transcribe_many((pcm, sample_rate, language)))

    async def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        """``ASREngine.detect_language`` (engines with ``detects_language``)."""
        with self._serving():
            return await asyncio.to_thread(self.asr.detect_language, pcm, sample_rate)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def _transcribe_many(self, items: list[tuple[np.ndarray, int, str]]) -> list[_Outcome]:
        self._counted(len(items))
        asr = self.asr
        if len(items) > 1 and self._device_batches:
            try:
                results = await asyncio.to_thread(asr.transcribe_batch, list(items))
                return [(True, result) for result in results]
            except Exception as exc:  # noqa: BLE001 - find the item that failed
                logger.warning(f"asr batch of {len(items)} failed ({exc}); retrying item by item")
        return list(await asyncio.gather(*(_attempt(asr.transcribe, *item) for item in items)))


class MTDeployment(_EngineReplica):
    """Translation; concurrent requests for one language pair share one engine call."""

    kind = "mt"

    def __init__(self, build: Callable[[], Engine], batching: dict[str, Any]) -> None:
        super().__init__(build, batching)
        self._configure_batch(self._translate_many)

    @property
    def mt(self) -> MTEngine:
        assert isinstance(self.engine, MTEngine)
        return self.engine

    def info(self) -> dict[str, Any]:
        return {**super().info(), "pairs": sorted([s, t] for s, t in self.mt.pairs())}

    async def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """``MTEngine.translate`` (batched with other rooms' texts of the same pair)."""
        with self._serving():
            return _unwrap(await self._translate_many((list(texts), source, target)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def _translate_many(self, items: list[tuple[list[str], str, str]]) -> list[_Outcome]:
        self._counted(len(items))
        mt = self.mt
        pairs: dict[tuple[str, str], list[int]] = {}
        for index, (_, source, target) in enumerate(items):
            pairs.setdefault((source, target), []).append(index)

        async def one_pair(source: str, target: str, indices: list[int]) -> list[tuple[int, _Outcome]]:
            if len(indices) > 1:
                texts = [text for i in indices for text in items[i][0]]
                try:
                    flat = await asyncio.to_thread(mt.translate, texts, source, target)
                except Exception as exc:  # noqa: BLE001 - find the request that failed
                    logger.warning(f"mt batch {source}→{target} failed ({exc}); retrying request by request")
                else:
                    out: list[tuple[int, _Outcome]] = []
                    position = 0
                    for i in indices:
                        count = len(items[i][0])
                        out.append((i, (True, list(flat[position : position + count]))))
                        position += count
                    return out
            single = await asyncio.gather(*(_attempt(mt.translate, *items[i]) for i in indices))
            return list(zip(indices, single, strict=True))

        outcomes: list[_Outcome] = [(False, EngineError("not translated"))] * len(items)
        for group in await asyncio.gather(*(one_pair(s, t, idx) for (s, t), idx in pairs.items())):
            for index, outcome in group:
                outcomes[index] = outcome
        return outcomes


_END = object()


class TTSDeployment(_EngineReplica):
    """Speech synthesis, streamed chunk by chunk; voice conditioning for cloning engines."""

    kind = "tts"

    @property
    def tts(self) -> TTSEngine:
        assert isinstance(self.engine, TTSEngine)
        return self.engine

    def info(self) -> dict[str, Any]:
        tts = self.tts
        return {
            **super().info(),
            "languages": sorted(tts.languages),
            "sample_rate": int(tts.sample_rate),
            "clones_voices": bool(tts.clones_voices),
        }

    async def synthesize(self, text: str, language: str, voice: Any | None = None) -> AsyncIterator[np.ndarray]:
        """``TTSEngine.synthesize``: each chunk is sent as soon as the engine yields it."""
        self._counted(1)
        with self._serving():
            chunks = await asyncio.to_thread(self.tts.synthesize, text, language, voice)
            pending: asyncio.Future[Any] | None = None
            try:
                while True:
                    pending = asyncio.ensure_future(asyncio.to_thread(next, chunks, _END))
                    chunk = await asyncio.shield(pending)
                    pending = None
                    if chunk is _END:
                        return
                    yield np.ascontiguousarray(chunk, dtype=np.int16)
            finally:
                _close_when_idle(chunks, pending)

    async def synthesize_all(self, text: str, language: str, voice: Any | None = None) -> list[np.ndarray]:
        """Every chunk at once (for callers that cannot stream: Ray Client)."""
        self._counted(1)

        def run() -> list[np.ndarray]:
            return [np.ascontiguousarray(c, dtype=np.int16) for c in self.tts.synthesize(text, language, voice)]

        with self._serving():
            return await asyncio.to_thread(run)

    async def condition(self, pcm: np.ndarray, sample_rate: int) -> Any:
        """The voice latents of ``pcm`` (``VoiceCloner.condition``), for cloning engines."""
        condition = getattr(self.tts, "condition", None)
        if not self.tts.clones_voices or condition is None:
            raise EngineError(f"tts engine '{self.tts.name}' does not clone voices", retryable=False)
        with self._serving():
            return await asyncio.to_thread(condition, pcm, sample_rate)


class EnginesIngress:
    """The application's entry: what the three stages are (one round trip)."""

    def __init__(self, asr: Any, mt: Any, tts: Any) -> None:
        self._stages = {"asr": asr, "mt": mt, "tts": tts}

    async def info(self) -> dict[str, Any]:
        """Each stage's ``info()`` (from one of its replicas)."""
        kinds = list(self._stages)
        infos = await asyncio.gather(*(self._stages[k].info.remote() for k in kinds))
        return dict(zip(kinds, infos, strict=True))


#: Stage name → deployment class.
STAGE_DEPLOYMENTS: dict[str, type[_EngineReplica]] = {
    "asr": ASRDeployment,
    "mt": MTDeployment,
    "tts": TTSDeployment,
}


def build_engines_app(stages: dict[str, StageSpec]) -> Any:
    """The Serve application: one deployment per stage (named ``asr``, ``mt``, ``tts``)
    behind the ``engines`` ingress. Deploy it with ``serve.run(app, name=...)``."""
    bound: dict[str, Any] = {}
    for kind, cls in STAGE_DEPLOYMENTS.items():
        spec = stages[kind]
        batching = {"max_batch_size": spec.max_batch_size, "batch_wait_timeout_s": spec.batch_wait_timeout_s}
        deployment = serve.deployment(**spec.deployment_options(kind))(cls)
        bound[kind] = deployment.bind(spec.build, batching)
    ingress = serve.deployment(name=INGRESS_NAME, num_replicas=1, ray_actor_options={"num_cpus": 0})(EnginesIngress)
    return ingress.bind(**bound)


# -- helpers ---------------------------------------------------------------------------


async def _attempt(fn: Callable[..., Any], *args: Any) -> _Outcome:
    """``fn(*args)`` in a thread, as an outcome instead of an exception."""
    try:
        return (True, await asyncio.to_thread(fn, *args))
    except Exception as exc:  # noqa: BLE001 - handed to this item's caller
        return (False, exc)


def _unwrap(outcome: _Outcome) -> Any:
    ok, value = outcome
    if ok:
        return value
    raise value


def _close_when_idle(chunks: Any, pending: asyncio.Future[Any] | None) -> None:
    """Close a chunk iterator, after the ``next`` still running in a thread (a cancelled
    stream) has returned: closing a running generator raises."""
    close = getattr(chunks, "close", None)
    if close is None:
        return

    def safe_close() -> None:
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - nothing to hand it to
            logger.debug(f"closing a tts stream: {exc}")

    def in_thread(*_: Any) -> None:
        # Closing may stop a child process or a model step: not on the replica's loop.
        threading.Thread(target=safe_close, name="tts-close", daemon=True).start()

    if pending is not None and not pending.done():
        pending.add_done_callback(in_thread)
    else:
        in_thread()


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - outside a replica (tests)
        return f"pid-{os.getpid()}"
