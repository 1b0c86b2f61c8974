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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loguru import logger

from pipeline.errors import EngineUnavailableError

__all__ = [
    "ModelMissingError",
    "PulledModel",
    "configured_models",
    "hub_offline",
    "is_local_path",
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
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # a corrupt cache entry or a malformed name
        logger.debug("cache lookup of {} failed: {}", repo_id, exc)

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


def configured_models(settings: Any) -> list[tuple[str, str]]:
    """``(kind, model)`` for every engine section of ``settings`` that names a model.

    Args:
        settings: A ``bot.config.Settings`` (its engine sections are read), a mapping
            of kind → ``EngineSettings``, or an iterable of model names / paths /
            ``EngineSettings``.
    """
    kinds = ("denoise", "vad_engine", "asr", "mt", "tts", "events", "vc", "image")
    if hasattr(settings, "engine") and callable(settings.engine):
        sections = [(kind, settings.engine(kind)) for kind in kinds]
        sections = [(k, s) for k, s in sections if s is not None and getattr(s, "engine", "") != "none"]
    elif isinstance(settings, dict):
        sections = list(settings.items())
    else:
        sections = [("", item) for item in settings]
    out: list[tuple[str, str]] = []
    for kind, item in sections:
        model = item if isinstance(item, str) else getattr(item, "model", None)
        if model and (kind, model) not in out:
            out.append((kind, model))
    return out


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
        progress: Show ``tqdm`` progress bars (one per file) on stderr.
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
    try:
        pulled = []
        for kind, model in configured_models(settings_or_models):
            if is_local_path(model):
                path = resolve_model(model, kind=kind, pull_hint=pull_hint)
                pulled.append(PulledModel(kind, model, path, local=True))
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
        return pulled
    finally:
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
