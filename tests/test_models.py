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
    # The default ASR model, then its routes' (Whisper, named by its hub repository).
    assert [kind for kind, _ in models] == ["asr", "asr", "mt", "tts", "events", "vc", "image"]
    assert ("asr", "mobiuslabsgmbh/faster-whisper-large-v3-turbo") in models
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
        overrides=[f"asr.model={asr}", "asr.routes=null", f"mt.model={mt}", f"tts.model={tts}", "events.engine=none", "vc.engine=none", "image.engine=none"],
    )
    out = io.StringIO()
    assert pull_command(settings, progress=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"asr: {asr} (local path") and "2.0 KB" in lines[0]
    assert no_network == []


@needs_hub
def test_model_status_looks_only_at_this_machine(empty_cache: Path, tmp_path: Path) -> None:
    from pipeline.models import check_models, model_status

    fake_cached_repo(empty_cache, "facebook/nllb-200-distilled-600M", {"config.json": "{}"})
    models = {"asr": str(tmp_path / "gone.nemo"), "mt": "facebook/nllb-200-distilled-600M", "tts": "coqui/XTTS-v2"}
    asr, mt, tts = model_status(models, pull_hint="polyvox models pull --profile cpu")
    assert not asr.present and "no such file or folder" in (asr.problem or "")
    assert mt.present and mt.path is not None and mt.path.name == "0123456789abcdef0123456789abcdef01234567"
    assert not tts.present and not tts.fetchable and "polyvox models pull --profile cpu" in (tts.problem or "")
    # check_models: the first model that cannot be had, in one line, before anything loads.
    with pytest.raises(ModelMissingError, match="gone.nemo"):
        check_models(models)
    with pytest.raises(ModelMissingError, match="coqui/XTTS-v2.*HF_HUB_OFFLINE"):
        check_models({"mt": models["mt"], "tts": models["tts"]})
    # An optional engine's missing model only turns its feature off: returned, not raised.
    (events,) = check_models({"mt": models["mt"], "events": "MIT/ast-x"}, optional=("events",))
    assert events.kind == "events" and not events.present and not events.fetchable
    with pytest.raises(ModelMissingError, match="MIT/ast-x"):
        check_models({"events": "MIT/ast-x"})


@needs_hub
def test_with_the_hub_on_an_uncached_model_is_fetched_later_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    from pipeline.models import check_models

    (later,) = check_models({"tts": "coqui/XTTS-v2"})
    assert later.fetchable and later.model == "coqui/XTTS-v2"
    assert no_network == []  # looking is not downloading


@needs_hub
def test_pull_shows_a_bar_over_the_models(tmp_path: Path, no_network: list[object], capsys) -> None:
    first, second = tmp_path / "a.nemo", tmp_path / "b"
    first.write_bytes(b"0")
    second.mkdir()
    pulled = pull({"asr": str(first), "mt": str(second)}, progress=True)
    assert [p.kind for p in pulled] == ["asr", "mt"]
    err = capsys.readouterr().err
    assert "models 2/2" in err and f"mt: {second}" in err
