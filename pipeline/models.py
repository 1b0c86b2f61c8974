"""Model management: where each engine's weights come from.

A model setting (``asr.model``, ``mt.model``, ``tts.model``) is either a **local path**
(a file such as ``/models/en.nemo`` or a folder in Hugging Face layout) or a **hub
name** (``facebook/nllb-200-distilled-600M``). Every engine's ``load()`` calls
:func:`resolve_model`, which turns either into a local path:

- a local path is used as it is, with no network access at all;
- a hub name is looked up in the local Hugging Face cache first; when it is not there
  it is downloaded, unless the hub is off (``HF_HUB_OFFLINE=1``, or no network), in
  which case :class:`ModelMissingError` says, in one line, which model is missing and
  which command fetches it (``polyvox models pull --profile gpu``).

:func:`pull` downloads every model of a profile ahead of time, with progress bars; it
is what ``polyvox models pull`` runs (:func:`pull_command`).

Some engines run a model in another runtime than the one it is published for (NLLB on
CTranslate2): :func:`converted_model` converts a checkpoint once and keeps the result
in a cache beside the Hugging Face cache, keyed by the checkpoint's revision (or path
and file dates) and the quantization.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loguru import logger

from pipeline.errors import EngineUnavailableError

__all__ = [
    "ModelMissingError",
    "ModelStatus",
    "PulledModel",
    "check_models",
    "configured_models",
    "conversion_cache_dir",
    "converted_model",
    "hub_offline",
    "is_local_path",
    "model_status",
    "pull",
    "pull_command",
    "resolve_model",
]

_INSTALL_HINT = "huggingface_hub is not installed: pip install 'polyvox[gpu]'"

#: Files no polyvox engine reads (other frameworks' copies of the same weights).
_IGNORE = [
    "*.msgpack", "*.h5", "tf_model*", "flax_model*", "rust_model.ot", "*.onnx", "onnx/*",
    "*.tflite", "*.ot", "coreml/*", "openvino/*",
]

#: Files a kind of model needs, where its repository holds more (OpenVoice's repository
#: has its base TTS too; diffusers repositories often carry a single-file checkpoint as
#: large as the pipeline next to the pipeline's folders).
_KIND_FILES: dict[str, list[str]] = {
    "vc": ["converter/*", "base_speakers/ses/*"],
    "image": ["model_index.json", "*/*"],
}

#: Where the ``polyvox models pull`` hint points when the profile is not known.
_DEFAULT_PULL_HINT = "polyvox models pull --profile gpu"


class ModelMissingError(EngineUnavailableError):
    """A configured model is neither a local path nor in the local cache, and cannot be fetched.

    Attributes:
        model: The model setting as configured.
    """

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


@dataclass(frozen=True)
class PulledModel:
    """One model :func:`pull` took care of.

    Attributes:
        kind: The engine section it is configured in (``asr``, ``mt``, ``tts``), or "".
        model: The model setting (hub name or path).
        path: Where it now lies on this machine.
        local: ``True`` when the setting was already a local path (nothing fetched).
    """

    kind: str
    model: str
    path: Path
    local: bool


@dataclass(frozen=True)
class ModelStatus:
    """Whether one configured model is on this machine (without loading or fetching it).

    Attributes:
        kind: The engine section (``asr``, ``mt``, ``tts``), or "".
        model: The model setting.
        path: Where it lies, when it is here.
        problem: Why it is not usable now, or ``None``.
        fetchable: Not here, but it would be downloaded on first use (the hub is on).
    """

    kind: str
    model: str
    path: Path | None
    problem: str | None = None
    fetchable: bool = False

    @property
    def present(self) -> bool:
        return self.path is not None


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off for this process (``HF_HUB_OFFLINE``)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_local_path(name_or_path: str) -> bool:
    """Whether a model setting names a local file or folder rather than a hub repository.

    Anything that exists on disk, is absolute, starts with ``.``/``~``, or ends in a
    checkpoint suffix is a path; ``org/name`` with nothing else is a hub name.
    """
    text = name_or_path.strip()
    if not text:
        return False
    expanded = os.path.expanduser(text)
    if os.path.exists(expanded) or os.path.isabs(expanded):
        return True
    if text.startswith((".", "~")) or text.endswith((".nemo", ".pt", ".pth", ".safetensors", ".bin")):
        return True
    # A hub repository id is "name" or "org/name": more slashes mean a path.
    return text.count("/") > 1 or "\\" in text


def resolve_model(
    name_or_path: str,
    *,
    kind: str = "",
    pull_hint: str = _DEFAULT_PULL_HINT,
    allow_patterns: list[str] | None = None,
) -> Path:
    """The local path of a configured model, downloading it only when that is allowed.

    Args:
        name_or_path: A local path, or a Hugging Face hub repository id.
        kind: The engine section (``asr``, ``mt``, ``tts``) for messages.
        pull_hint: The command the error message recommends.
        allow_patterns: Only these files of a hub repository are needed (downloads only).

    Returns:
        The file or folder as given for local paths; the snapshot folder for hub names.

    Raises:
        ModelMissingError: a local path that does not exist, or a hub model that is not
            cached and cannot be downloaded (offline, no network, no such repository).
        ImportError: ``huggingface_hub`` is not installed (hub names only).
    """
    label = f"{kind}.model " if kind else "model "
    allow_patterns = allow_patterns or _KIND_FILES.get(kind)
    if is_local_path(name_or_path):
        path = Path(os.path.expanduser(name_or_path.strip()))
        if not path.exists():
            raise ModelMissingError(f"{label}'{name_or_path}': no such file or folder", model=name_or_path)
        return path

    repo_id = name_or_path.strip()
    try:
        cached = _cached(repo_id)
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if cached is not None:
        return cached

    if hub_offline():
        raise ModelMissingError(
            f"{label}'{repo_id}' is not downloaded and the hub is off (HF_HUB_OFFLINE=1): "
            f"run `{pull_hint}` with network access, or set {kind or 'the'}"
            f"{'.model' if kind else ' model'} to a local path",
            model=repo_id,
        )
    logger.info("downloading {} from the Hugging Face hub (first use)", repo_id)
    return _download(repo_id, label=label, pull_hint=pull_hint, allow_patterns=allow_patterns)


def _download(
    repo_id: str, *, label: str, pull_hint: str, allow_patterns: list[str] | None = None
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=allow_patterns,
                ignore_patterns=_ignore_patterns(repo_id),
            )
        )
    except GatedRepoError:
        reason = "it is gated: accept its licence on the hub and set HF_TOKEN"
    except RepositoryNotFoundError:
        reason = "no such repository on the Hugging Face hub"
    except LocalEntryNotFoundError:
        reason = "the hub cannot be reached and it is not in the local cache"
    except (HfHubHTTPError, OSError) as exc:
        reason = f"download failed ({_one_line(exc)})"
    raise ModelMissingError(
        f"{label}'{repo_id}' is not available: {reason}; `{pull_hint}` fetches it ahead",
        model=repo_id,
    )


def _ignore_patterns(repo_id: str) -> list[str]:
    """Skip other frameworks' files, and PyTorch pickles where safetensors exist."""
    patterns = list(_IGNORE)
    try:
        from huggingface_hub import HfApi

        # model_info is one request (the tree listing retries for ~25 s when offline).
        siblings = HfApi().model_info(repo_id).siblings or []
        files = [sibling.rfilename for sibling in siblings]
    except Exception as exc:  # noqa: BLE001 - only an optimisation; download everything
        logger.debug("cannot list {}: {}", repo_id, exc)
        return patterns
    if any(name.endswith(".safetensors") for name in files):
        patterns += ["pytorch_model*.bin", "*.pt"]
    return patterns


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _cached(repo_id: str) -> Path | None:
    """The cached snapshot of a hub repository, or ``None`` (never touches the network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a corrupt cache entry or a malformed name
        logger.debug("cache lookup of {} failed: {}", repo_id, exc)
        return None


def model_status(settings_or_models: Any, *, pull_hint: str | None = None) -> list[ModelStatus]:
    """Where each configured model stands, looking only at this machine.

    Args:
        settings_or_models: See :func:`configured_models`.
        pull_hint: The command that fetches them (default: ``polyvox models pull
            --profile <the settings' profile>``).
    """
    profile = getattr(settings_or_models, "profile", None)
    hint = pull_hint or (f"polyvox models pull --profile {profile}" if profile else _DEFAULT_PULL_HINT)
    out: list[ModelStatus] = []
    for kind, model in configured_models(settings_or_models):
        label = f"{kind}.model" if kind else "model"
        if is_local_path(model):
            path = Path(os.path.expanduser(model.strip()))
            if path.exists():
                out.append(ModelStatus(kind, model, path))
            else:
                out.append(ModelStatus(kind, model, None, f"{label} '{model}': no such file or folder"))
            continue
        try:
            cached = _cached(model.strip())
        except ImportError:
            out.append(ModelStatus(kind, model, None, f"{label} '{model}': {_INSTALL_HINT}"))
            continue
        if cached is not None:
            out.append(ModelStatus(kind, model, cached))
        elif hub_offline():
            out.append(
                ModelStatus(
                    kind, model, None,
                    f"{label} '{model}' is not downloaded and the hub is off (HF_HUB_OFFLINE=1): "
                    f"run `{hint}` with network access, or set {label} to a local path",
                )
            )
        else:
            out.append(
                ModelStatus(kind, model, None, f"{label} '{model}' is not downloaded yet (`{hint}`)", fetchable=True)
            )
    return out


def check_models(settings: Any, *, optional: Iterable[str] = ()) -> list[ModelStatus]:
    """Fail fast, before loading anything, when a configured model cannot be had.

    Models the hub can still provide are left to the engines (they download on first
    use) and returned so the caller can say so. A missing model of an ``optional`` kind
    (an engine whose feature is simply off without it) is returned too, not raised.

    Raises:
        ModelMissingError: the first model that is neither here nor fetchable.
        ImportError: a hub model without ``huggingface_hub`` installed.
    """
    optional = set(optional)
    fetch = []
    for status in model_status(settings):
        if status.present:
            continue
        if not status.fetchable and status.kind not in optional:
            if _INSTALL_HINT in (status.problem or ""):
                raise ImportError(_INSTALL_HINT)
            raise ModelMissingError(status.problem or status.model, model=status.model)
        fetch.append(status)
    return fetch


def configured_models(settings: Any) -> list[tuple[str, str]]:
    """``(kind, model)`` for every engine section of ``settings`` that names a model.

    Models are named as they are fetched: an engine that takes short names (Whisper's
    ``large-v3-turbo``) gives the hub repository it means. ``asr.routes`` models count too.

    Args:
        settings: A ``bot.config.Settings`` (its engine sections are read), a mapping
            of kind → ``EngineSettings``, or an iterable of model names / paths /
            ``EngineSettings``.
    """
    kinds = ("denoise", "vad_engine", "asr", "mt", "tts", "events", "vc", "image")
    if hasattr(settings, "engine") and callable(settings.engine):
        sections = []
        for kind in kinds:
            section = settings.engine(kind)
            if section is None or getattr(section, "engine", "") == "none":
                continue
            sections.append((kind, section))
            routes = getattr(section, "routes", None) or {}
            sections += [(kind, route) for _, route in sorted(routes.items())]
    elif isinstance(settings, dict):
        sections = list(settings.items())
    else:
        sections = [("", item) for item in settings]
    out: list[tuple[str, str]] = []
    for kind, item in sections:
        model = item if isinstance(item, str) else getattr(item, "model", None)
        engine = None if isinstance(item, str) else getattr(item, "engine", None)
        if model and kind and engine:
            model = _hub_name(kind, engine, model)
        if model and (kind, model) not in out:
            out.append((kind, model))
    return out


def _hub_name(kind: str, engine: str, model: str) -> str:
    """The repository an engine fetches for a model setting (its ``hub_repository``)."""
    if is_local_path(model):
        return model
    try:
        from pipeline.engines.registry import engine_class

        repository = getattr(engine_class(kind, engine), "hub_repository", None)
    except Exception:  # noqa: BLE001 - unknown engines and missing extras keep the name
        return model
    return str(repository(model)) if callable(repository) else model


def pull(
    settings_or_models: Any,
    *,
    progress: bool = True,
    pull_hint: str = _DEFAULT_PULL_HINT,
) -> list[PulledModel]:
    """Download every configured checkpoint into the Hugging Face cache.

    Local paths are checked, not fetched. Models already cached are verified against
    the hub (only missing or changed files are downloaded).

    Args:
        settings_or_models: See :func:`configured_models`.
        progress: Show ``tqdm`` progress bars on stderr: one over the models, and
            the hub's own per file.
        pull_hint: The command named in error messages.

    Returns:
        One entry per model, in configuration order.

    Raises:
        ModelMissingError: a model could not be fetched (offline, no network, a local
            path that does not exist, a gated or unknown repository).
        ImportError: ``huggingface_hub`` is not installed.
    """
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    was_disabled = are_progress_bars_disabled()
    if progress:
        enable_progress_bars()
    else:
        disable_progress_bars()
    from tqdm import tqdm

    models = configured_models(settings_or_models)
    overall = tqdm(
        total=len(models), desc="models", unit="model", disable=not progress or not models, file=sys.stderr,
        bar_format="{desc} {n}/{total} |{bar}| {postfix}",
    )
    try:
        pulled = []
        for kind, model in models:
            overall.set_postfix_str(f"{kind or 'model'}: {model}")
            if is_local_path(model):
                path = resolve_model(model, kind=kind, pull_hint=pull_hint)
                pulled.append(PulledModel(kind, model, path, local=True))
                overall.update()
                continue
            if hub_offline():
                raise ModelMissingError(
                    f"cannot download '{model}': the hub is off (HF_HUB_OFFLINE=1); "
                    f"unset it and run `{pull_hint}` again",
                    model=model,
                )
            label = f"{kind}.model " if kind else "model "
            path = _download(model, label=label, pull_hint=pull_hint, allow_patterns=_KIND_FILES.get(kind))
            pulled.append(PulledModel(kind, model, path, local=False))
            overall.update()
        return pulled
    finally:
        overall.close()
        if was_disabled:
            disable_progress_bars()
        else:
            enable_progress_bars()


def pull_command(settings: Any, *, progress: bool = True, out: IO[str] | None = None) -> int:
    """``polyvox models pull``: fetch a profile's models, report one line per model.

    Args:
        settings: The resolved ``bot.config.Settings`` (``--profile``/``--set`` applied).
        progress: Show download progress bars.
        out: Where the summary goes (stdout by default).

    Returns:
        0 when every model is on this machine afterwards.

    Raises:
        ModelMissingError: see :func:`pull` (the CLI prints it as one line, exit 2).
    """
    out = out or sys.stdout
    profile = getattr(settings, "profile", None)
    hint = f"polyvox models pull --profile {profile}" if profile else _DEFAULT_PULL_HINT
    models = configured_models(settings)
    if not models:
        print(f"profile '{profile}' uses no downloadable models: nothing to pull", file=out)
        return 0
    for item in pull(settings, progress=progress, pull_hint=hint):
        where = "local path, nothing to fetch" if item.local else f"cached at {item.path}"
        print(f"{item.kind or 'model'}: {item.model} ({where}, {_size(item.path)})", file=out)
    return 0


def _size(path: Path) -> str:
    total: float = 0
    files: Iterable[Path] = path.rglob("*") if path.is_dir() else [path]
    for file in files:
        try:
            if file.is_file():
                total += file.stat().st_size  # follows the cache's symlinks into blobs/
        except OSError:
            continue
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"  # pragma: no cover


# ------------------------------------------------------------------------ conversions

#: Environment variable that moves the conversion cache.
CONVERSION_CACHE_ENV = "POLYVOX_CONVERSION_CACHE"
#: Written last into a finished conversion: a folder without it is not used.
_CONVERSION_STAMP = "polyvox-conversion.json"
#: Files whose size and date identify a local checkpoint's version.
_WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".pt", ".pth")


def conversion_cache_dir() -> Path:
    """Where converted models live: ``$POLYVOX_CONVERSION_CACHE``, else beside the HF cache.

    The Hugging Face hub cache is ``~/.cache/huggingface/hub`` unless ``HF_HOME`` or
    ``HF_HUB_CACHE`` move it; conversions go to its sibling ``polyvox-converted``.
    """
    override = os.environ.get(CONVERSION_CACHE_ENV, "").strip()
    if override:
        return Path(os.path.expanduser(override))
    try:
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
        )
        hub_cache = Path(home) / "hub"
    return hub_cache.parent / "polyvox-converted"


def _source_key(source: Path) -> tuple[str, str]:
    """A readable name and a digest that changes whenever the checkpoint does.

    A hub snapshot folder (``.../models--org--name/snapshots/<commit>``) is its commit;
    any other folder is its absolute path plus the size and date of its weight files.
    """
    resolved = source.resolve()
    parts = source.absolute().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        name = parts[-3].removeprefix("models--")
        identity = f"hub:{name}@{parts[-1]}"
    else:
        name = resolved.name or "model"
        stats = []
        files = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
        for file in files:
            if file.is_file() and file.name.endswith(_WEIGHT_SUFFIXES):
                info = file.stat()
                stats.append(f"{file.name}:{info.st_size}:{info.st_mtime_ns}")
        identity = f"path:{resolved}|{'|'.join(stats)}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:60]
    return safe, digest


def converted_model(
    source: Path,
    *,
    runtime: str,
    quantization: str,
    convert: Callable[[Path, Path], None],
    label: str = "model",
    cache_dir: Path | None = None,
    heartbeat_s: float = 10.0,
) -> Path:
    """The folder of ``source`` converted for ``runtime``, converting it the first time.

    The conversion runs into a temporary folder next to its final place and is renamed
    into place only when it finished, so an interrupted or failed conversion never
    leaves a folder that looks usable; two processes converting at once both succeed
    (the second's copy is discarded). Progress is logged: the start, a line every
    ``heartbeat_s`` while it runs, and the end with the time and size.

    Args:
        source: The checkpoint as :func:`resolve_model` returned it.
        runtime: Names the target runtime (``ctranslate2``), part of the cache key.
        quantization: The weights' type in the converted model, part of the cache key.
        convert: ``convert(source, output_folder)`` writes the converted model.
        label: Names the model in log lines and errors (``mt.model 'facebook/...'``).
        cache_dir: The cache's root (default :func:`conversion_cache_dir`).
        heartbeat_s: Seconds between progress lines.

    Raises:
        EngineUnavailableError: the conversion failed (the message says why).
    """
    name, digest = _source_key(source)
    root = Path(cache_dir) if cache_dir is not None else conversion_cache_dir()
    final = root / runtime / f"{name}-{digest}-{quantization}"
    if (final / _CONVERSION_STAMP).is_file():
        return final

    root_dir = final.parent
    root_dir.mkdir(parents=True, exist_ok=True)
    temporary = root_dir / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    logger.info("converting {} to {} ({}) into {}", label, runtime, quantization, final)
    started = time.monotonic()
    finished = threading.Event()

    def heartbeat() -> None:
        while not finished.wait(heartbeat_s):
            logger.info(
                "still converting {} to {} ({:.0f} s so far)", label, runtime, time.monotonic() - started
            )

    ticker = threading.Thread(target=heartbeat, name="conversion-progress", daemon=True)
    ticker.start()
    try:
        convert(source, temporary)
        stamp = {
            "source": str(source),
            "runtime": runtime,
            "quantization": quantization,
            "seconds": round(time.monotonic() - started, 1),
        }
        (temporary / _CONVERSION_STAMP).write_text(json.dumps(stamp, indent=1))
        try:
            os.rename(temporary, final)
        except OSError:
            if not (final / _CONVERSION_STAMP).is_file():
                # An unfinished folder (from a crashed run of an older layout) is in
                # the way: replace it.
                shutil.rmtree(final, ignore_errors=True)
                os.rename(temporary, final)
            # else: another process finished the same conversion first; use its copy.
    except BaseException as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(exc, EngineUnavailableError | KeyboardInterrupt | SystemExit):
            raise
        raise EngineUnavailableError(
            f"converting {label} to {runtime} ({quantization}) failed: {_one_line(exc)}"
        ) from exc
    finally:
        finished.set()
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info(
        "converted {} to {} in {:.1f} s ({})", label, runtime, time.monotonic() - started, _size(final)
    )
    return final
