"""``polyvox engines serve``: ASR, MT and TTS as one Ray Serve application.

The engines side's composition root: the profile's ``asr:``/``mt:``/``tts:`` settings and
the ``engines:`` section become one :class:`~pipeline.engines.deployments.StageSpec` per
stage, and :func:`~pipeline.engines.deployments.build_engines_app` binds them into the
application room servers reach with ``engines.backend: ray`` (``bot.app.load_engines``).

``engines serve`` deploys into the cluster at ``--address`` (or ``engines.address``), or
starts a Ray instance of its own when neither is set, then keeps running: Ctrl-C (or
SIGTERM) deletes the application, and stops the Ray instance it started.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from loguru import logger

from bot.config import EngineSettings, Settings
from bot.engines_settings import REMOTE_STAGES
from pipeline.engines.base import Engine
from pipeline.engines.registry import create_engine
from pipeline.errors import EngineUnavailableError

__all__ = ["app_builder", "build_engine", "deploy_engines", "engines_app", "serve_engines", "stage_specs", "undeploy_engines"]

#: Environment variables replicas inherit from the deploying process when set there
#: (offline operation: the replicas must not reach the Hugging Face hub either).
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")


def stage_specs(settings: Settings) -> dict[str, Any]:
    """One ``StageSpec`` per remote stage, from the engine and ``engines:`` settings."""
    from pipeline.engines.deployments import StageSpec

    env = {key: os.environ[key] for key in _FORWARDED_ENV if os.environ.get(key)}
    specs: dict[str, StageSpec] = {}
    for kind in REMOTE_STAGES:
        deploy = settings.engines.stage(kind)
        cfg = settings.engine(kind)
        specs[kind] = StageSpec(
            build=functools.partial(build_engine, kind, cfg),
            name=cfg.engine,
            num_replicas=deploy.num_replicas,
            autoscaling=deploy.autoscaling.model_dump() if deploy.autoscaling is not None else None,
            num_cpus=deploy.num_cpus,
            num_gpus=deploy.num_gpus,
            max_ongoing_requests=deploy.max_ongoing_requests,
            max_batch_size=deploy.max_batch_size,
            batch_wait_timeout_s=deploy.batch_wait_timeout_s,
            env=env,
        )
    return specs


def build_engine(kind: str, cfg: EngineSettings) -> Engine:
    """The stage's engine as ``bot.app.load_engines`` builds it for a local room server
    (created, not loaded; ASR routed per language when ``asr.routes`` are set); replicas
    call it."""
    from bot.app import create_asr_engine
    from bot.config import ASRSettings

    if kind == "asr" and isinstance(cfg, ASRSettings):
        return create_asr_engine(cfg)
    return create_engine(kind, cfg.engine, model=cfg.model, device=cfg.device, options=cfg.options)


def engines_app(settings: Settings) -> Any:
    """The Serve application of these settings (not deployed)."""
    from pipeline.engines.deployments import build_engines_app

    return build_engines_app(stage_specs(settings))


def app_builder(args: dict[str, Any]) -> Any:
    """Serve's application builder (``import_path: bot.engines_app:app_builder``) for
    ``serve deploy`` and KubeRay's RayService, which deploy from a config file.

    Args:
        args: ``profile`` (``offline``/``cpu``/``gpu``), ``config`` (a file; default
            the built-in one), ``set`` (a list of ``section.key=value`` overrides).

    Raises:
        ConfigError: the settings are invalid (one line naming the key).
    """
    from bot.config import load_settings

    overrides = args.get("set") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    settings = load_settings(args.get("config"), profile=args.get("profile"), overrides=list(overrides))
    return engines_app(settings)


def deploy_engines(settings: Settings) -> None:
    """Deploy (or update) the engines application on the connected Ray cluster; returns
    once every replica has loaded and warmed up its engine.

    Raises:
        EngineUnavailableError: a replica could not start (a missing model or extra on
            the cluster's nodes), as one line.
    """
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # Room servers call the deployments through handles: no HTTP proxy is needed.
    serve.start(proxy_location="Disabled")
    try:
        serve.run(engines_app(settings), name=settings.engines.app_name, route_prefix=None)
    except RuntimeError as exc:
        raise EngineUnavailableError(
            f"deploying the engines app '{settings.engines.app_name}' failed: {_failure(settings, exc)}"
        ) from None


def undeploy_engines(settings: Settings) -> None:
    """Delete the engines application (its replicas stop and release their models)."""
    from ray import serve

    serve.delete(settings.engines.app_name)


def serve_engines(
    settings: Settings,
    *,
    address: str | None = None,
    ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deploy the engines application and keep it running until ``stop`` is set, Ctrl-C or
    SIGTERM; then undeploy it.

    Args:
        settings: The profile's engines and the ``engines:`` section.
        address: The Ray cluster to deploy into; default ``engines.address``; neither:
            start a Ray instance in this process (it ends with it).
        ready: Called with the address room servers should use, once deployed.
        stop: Set it to undeploy and return (tests); default: wait for a signal.

    Raises:
        ImportError: Ray Serve is not installed.
        EngineUnavailableError: the cluster cannot be reached, or deploying failed.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError("polyvox engines serve needs Ray Serve: pip install 'polyvox[ray]'") from exc
    from pipeline.engines.remote import init_ray

    address = address or settings.engines.address
    started_ray = False
    if not ray.is_initialized():
        if address is None:
            ray.init(
                num_cpus=_cpus_needed(settings),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        else:
            # The same checks (and one-line errors) as a room server connecting.
            init_ray(address, settings.engines.connect_timeout_s)
        started_ray = True
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    try:
        deploy_engines(settings)
        try:
            where = ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 - Ray Client has no GCS address to give
            where = address or "auto"
        if ready is not None:
            ready(where)
        while not stop.wait(0.5):
            pass
    finally:
        restore()
        try:
            undeploy_engines(settings)
            logger.info(f"engines app '{settings.engines.app_name}' undeployed")
        except Exception as exc:  # noqa: BLE001 - the cluster may be gone already
            logger.warning(f"undeploying the engines app failed: {exc}")
        if started_ray:
            ray.shutdown()


def _cpus_needed(settings: Settings) -> int:
    """Logical CPUs a Ray instance of our own needs so every replica can be placed."""
    need = 0.0
    for kind in REMOTE_STAGES:
        stage = settings.engines.stage(kind)
        replicas = stage.autoscaling.max_replicas if stage.autoscaling is not None else stage.num_replicas
        need += stage.num_cpus * replicas
    return max(os.cpu_count() or 1, math.ceil(need))


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make Ctrl-C and SIGTERM set ``stop`` (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _failure(settings: Settings, exc: BaseException) -> str:
    """What made the deployment fail: the failing stage's replica error, from Serve's
    status (the exception Serve raises only names the deployment)."""
    try:
        from ray import serve

        app = serve.status().applications.get(settings.engines.app_name)
        for kind, status in (app.deployments if app is not None else {}).items():
            message = getattr(status, "message", "") or ""
            if "Error" in message:
                return f"{kind}: {_cause_line(message)}"
    except Exception as status_error:  # noqa: BLE001 - fall back to Serve's own words
        logger.debug(f"no deployment status: {status_error}")
    return _cause_line(exc)


def _cause_line(exc: BaseException | str) -> str:
    """The line of a deployment failure that says what went wrong (the last ``...Error:``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":", 1)[0]]
    return (errors[-1] if errors else lines[-1] if lines else type(exc).__name__)[:300]
