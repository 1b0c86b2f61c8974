"""Specification of model management: local paths, the cache, and the offline error."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from pipeline.errors import EngineUnavailableError
from pipeline.models import (
    ModelMissingError,
    configured_models,
    is_local_path,
    pull,
    pull_command,
    resolve_model,
)

needs_hub = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("huggingface_hub") is None,
    reason="huggingface_hub is not installed (the gpu extra)",
)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with the hub switched off."""
    constants = pytest.importorskip("huggingface_hub.constants")

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads its cache location once, at import.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fail (and record) any attempt to open a network connection; the hub is *on*."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access in a test")

    def unresolvable(*args: object, **kwargs: object) -> None:
        attempts.append(args[:2])
        raise socket.gaierror("name resolution in a test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def fake_cached_repo(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """Lay out ``repo_id`` in the cache the way huggingface_hub stores a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        (snapshot / name).write_text(content)
    return snapshot


def test_tells_paths_from_hub_names(tmp_path: Path) -> None:
    assert is_local_path(str(tmp_path))
    assert is_local_path("/models/en.nemo")
    assert is_local_path("./models/nllb")
    assert is_local_path("~/models/x")
    assert is_local_path("model.nemo")
    assert not is_local_path("facebook/nllb-200-distilled-600M")
    assert not is_local_path("nvidia/parakeet-tdt-0.6b-v2")


def test_a_local_path_is_used_as_is_without_network(tmp_path: Path, no_network: list[object]) -> None:
    checkpoint = tmp_path / "en.nemo"
    checkpoint.write_bytes(b"x")
    assert resolve_model(str(checkpoint), kind="asr") == checkpoint
    assert resolve_model(str(tmp_path)) == tmp_path
    assert no_network == []


def test_a_missing_local_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as info:
        resolve_model(str(tmp_path / "nope.nemo"), kind="asr")
    message = str(info.value)
    assert "\n" not in message
    assert "asr.model" in message and "nope.nemo" in message


def test_a_cached_hub_model_is_found_offline(empty_cache: Path) -> None:
    snapshot = fake_cached_repo(empty_cache, "facebook/nllb-200-distilled-600M", {"config.json": "{}"})
    assert resolve_model("facebook/nllb-200-distilled-600M", kind="mt") == snapshot


def test_an_uncached_hub_model_offline_names_it_and_the_pull_command(empty_cache: Path) -> None:
    with pytest.raises(ModelMissingError) as info:
        resolve_model("facebook/nllb-200-distilled-1.3B", kind="mt")
    message = str(info.value)
    assert isinstance(info.value, EngineUnavailableError)
    assert "\n" not in message
    assert "facebook/nllb-200-distilled-1.3B" in message
    assert "polyvox models pull --profile gpu" in message
    assert info.value.model == "facebook/nllb-200-distilled-1.3B"


def test_no_network_gives_the_same_single_line(
    empty_cache: Path, no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    with pytest.raises(ModelMissingError) as info:
        resolve_model("nvidia/parakeet-tdt-0.6b-v2", kind="asr")
    message = str(info.value)
    print(message)
    assert "\n" not in message
    assert "nvidia/parakeet-tdt-0.6b-v2" in message and "polyvox models pull" in message
    assert no_network, "the hub was not even tried"


def test_configured_models_reads_every_engine_section() -> None:
    from bot.config import load_settings

    settings = load_settings(profile="gpu")
    models = configured_models(settings)
    assert [kind for kind, _ in models] == ["asr", "mt", "tts", "events", "vc", "image"]
    assert ("mt", "facebook/nllb-200-distilled-1.3B") in models
    assert configured_models(["a/b", "a/b", "/x.nemo"]) == [("", "a/b"), ("", "/x.nemo")]


def test_pull_offline_fails_with_one_line(empty_cache: Path) -> None:
    with pytest.raises(ModelMissingError, match="HF_HUB_OFFLINE") as info:
        pull(["facebook/nllb-200-distilled-600M"], progress=False)
    assert "\n" not in str(info.value)


@needs_hub
def test_pull_command_reports_local_models(tmp_path: Path, no_network: list[object]) -> None:
    from bot.config import load_settings

    asr = tmp_path / "en.nemo"
    asr.write_bytes(b"0" * 2048)
    mt = tmp_path / "nllb"
    mt.mkdir()
    (mt / "config.json").write_text("{}")
    tts = tmp_path / "xtts"
    tts.mkdir()
    settings = load_settings(
        profile="gpu",
        overrides=[f"asr.model={asr}", f"mt.model={mt}", f"tts.model={tts}", "events.engine=none", "vc.engine=none", "image.engine=none"],
    )
    out = io.StringIO()
    assert pull_command(settings, progress=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"asr: {asr} (local path") and "2.0 KB" in lines[0]
    assert no_network == []
