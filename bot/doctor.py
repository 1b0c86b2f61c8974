"""``polyvox doctor``: is this machine ready to run a profile? What is missing, and how to fix it.

Checks, without loading any model: the configuration, the Python extras the profile's
engines need, ffmpeg, libopus, the Apertium pairs and espeak-ng voices for the
configured languages (these two engines are cheap to start, so they are started), the
models in the Hugging Face cache, the GPU, and whether ``polyvox serve`` could listen.
Each line says ``ok``, ``warn`` (works, but not as well) or ``MISSING`` with the fix.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Check", "doctor_command", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One finding.

    Attributes:
        name: What was checked.
        status: ``ok``, ``warn`` or ``missing``.
        detail: What was found (a version, a path) or what is wrong.
        fix: How to fix it (for ``warn`` and ``missing``).
    """

    name: str
    status: str
    detail: str = ""
    fix: str = ""


def _ok(name: str, detail: str = "") -> Check:
    return Check(name, "ok", detail)


def _missing(name: str, detail: str, fix: str) -> Check:
    return Check(name, "missing", detail, fix)


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0][:80] if first else ""


def check_tools(settings: Any = None, which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    """ffmpeg (decoding any input) and libopus (Discord voice)."""
    out = []
    for tool in ("ffmpeg", "ffprobe"):
        path = which(tool)
        if path:
            out.append(_ok(tool, f"{_version([path, '-version'])} ({path})"))
        else:
            out.append(_missing(tool, "not found: recordings other than WAV cannot be read", "sudo apt install ffmpeg"))
    opus = ctypes.util.find_library("opus")
    if opus:
        out.append(_ok("libopus", opus))
    else:
        out.append(_missing("libopus", "not found: the Discord bot cannot send or receive voice", "sudo apt install libopus0"))
    return out


def check_extras(settings: Any) -> list[Check]:
    """The Python packages the profile's engines and the transports need."""
    from bot.config import ENGINE_KINDS
    from pipeline.engines.registry import engine_class

    out = []
    for kind in ENGINE_KINDS:
        name = settings.engine(kind).engine
        try:
            engine_class(kind, name)
        except ImportError as exc:
            out.append(_missing(f"{kind} engine '{name}'", "its Python packages are not installed", str(exc)))
        else:
            out.append(_ok(f"{kind} engine '{name}'", "installed"))
    for module, what, extra in (("aiortc", "WebRTC rooms", "webrtc"), ("discord", "Discord bot", "discord")):
        try:
            __import__(module)
        except ImportError:
            out.append(_missing(what, f"{module} is not installed", f".venv/bin/pip install -e '.[{extra}]'"))
        else:
            out.append(_ok(what, f"{module} installed"))
    return out


def check_languages(settings: Any) -> list[Check]:
    """Apertium pairs and espeak-ng voices for the configured languages (when the
    profile uses those engines: they start in a fraction of a second, so they are
    started and asked)."""
    from pipeline.engines.registry import create_engine
    from pipeline.errors import PolyvoxError

    out = []
    source = settings.languages.speaker
    targets = [t for t in settings.languages.listeners if t != source]
    for kind, name in (("mt", "apertium"), ("tts", "espeak")):
        cfg = settings.engine(kind)
        if cfg.engine != name:
            continue
        label = "Apertium" if name == "apertium" else "espeak-ng"
        try:
            engine: Any = create_engine(kind, cfg.engine, model=cfg.model, device=cfg.device, options=cfg.options)
            engine.load()
        except (PolyvoxError, ImportError, OSError) as exc:
            fix = "sudo apt install apertium apertium-eng-spa" if name == "apertium" else "sudo apt install espeak-ng"
            out.append(_missing(label, str(exc), fix))
            continue
        try:
            if name == "apertium":
                for target in targets:
                    if engine.supports(source, target):
                        out.append(_ok(f"Apertium {source}→{target}", "pair installed"))
                    else:
                        out.append(_missing(
                            f"Apertium {source}→{target}", "no such pair installed",
                            "sudo apt install apertium-<pair> (apt-cache search apertium- lists them)",
                        ))
            else:
                for language in dict.fromkeys([source, *targets]):
                    if language in engine.languages:
                        out.append(_ok(f"espeak-ng voice {language}", "installed"))
                    else:
                        out.append(_missing(f"espeak-ng voice {language}", "no voice for it", "sudo apt install espeak-ng-data"))
        finally:
            engine.close()
    return out


def check_models(settings: Any) -> list[Check]:
    """Every configured model: a local path that exists, or in the Hugging Face cache."""
    from pipeline.models import hub_offline, is_local_path, model_status

    out = []
    hint = f".venv/bin/polyvox models pull --profile {settings.profile}"
    for status in model_status(settings, pull_hint=hint):
        name = f"{status.kind}.model {status.model}"
        if status.present:
            out.append(_ok(name, str(status.path)))
        elif status.fetchable:
            out.append(Check(name, "warn", "not downloaded: it is fetched on first use (slow start)", hint))
        elif is_local_path(status.model):
            out.append(_missing(name, "no such file or folder", "fix the path, or use a hub name and pull it"))
        elif "huggingface_hub" in (status.problem or ""):
            out.append(_missing(name, status.problem or "", ".venv/bin/pip install -e '.[gpu]'"))
        else:
            offline = " (and HF_HUB_OFFLINE=1 forbids fetching it)" if hub_offline() else ""
            out.append(_missing(name, f"not in the Hugging Face cache{offline}", hint))
    if not out:
        out.append(_ok("models", f"profile '{settings.profile}' ships its models (nothing to download)"))
    return out


def check_gpu(settings: Any, which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    """A CUDA device, for the engines that use one (NeMo, NLLB, XTTS)."""
    devices = {settings.engine(kind).device for kind in ("asr", "mt", "tts")}
    torch_engines = {settings.engine(kind).engine for kind in ("asr", "mt", "tts")} & {"nemo", "nllb", "xtts"}
    cuda, name = False, ""
    if torch_engines:  # importing torch takes seconds: only when the profile uses it
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
            name = torch.cuda.get_device_name(0) if cuda else ""
        except ImportError:
            pass
    if cuda:
        return [_ok("GPU", name)]
    smi = which("nvidia-smi")
    detail = "no CUDA device" + (" (nvidia-smi is there: check the driver and torch's CUDA build)" if smi else "")
    if torch_engines and any(d.startswith("cuda") for d in devices):
        return [_missing("GPU", detail, "use --profile cpu, or set asr/mt/tts.device=cpu")]
    if torch_engines:
        return [Check("GPU", "warn", f"{detail}: {', '.join(sorted(torch_engines))} run on the CPU (slow)",
                      "a CUDA GPU with its driver; or the cpu profile's smaller models")]
    found = "nvidia-smi found" if smi else "no NVIDIA driver"
    return [_ok("GPU", f"not needed by profile '{settings.profile}' ({found})")]


def check_server(settings: Any) -> list[Check]:
    """Whether ``polyvox serve`` could listen, and would be allowed to."""
    from bot.preflight import check_port
    from pipeline.errors import ConfigError
    from transports.webrtc import check_security, room_secret

    out = []
    where = f"{settings.server.host}:{settings.server.port}"
    try:
        check_port(settings.server.host, settings.server.port)
        out.append(_ok("server port", f"{where} is free"))
    except ConfigError as exc:
        out.append(_missing("server port", str(exc), f"stop what listens on {where}, or --set server.port=N"))
    try:
        required = check_security(settings.server.host, settings.webrtc, room_secret())
        out.append(_ok("room security", "tokens required" if required else "loopback only, no tokens"))
    except ConfigError as exc:
        out.append(_missing("room security", str(exc), "export POLYVOX_ROOM_SECRET=$(openssl rand -hex 32)"))
    if os.environ.get("DISCORD_TOKEN", "").strip():
        out.append(_ok("Discord bot", "DISCORD_TOKEN is set: polyvox serve starts it"))
    else:
        out.append(Check("Discord bot", "ok", "DISCORD_TOKEN is not set: the bot stays off (README: Discord bot)"))
    return out


def run_checks(settings: Any) -> list[Check]:
    """Every check, in the order they are printed."""
    checks: list[Check] = []
    for group in (check_extras, check_tools, check_languages, check_models, check_gpu, check_server):
        try:
            checks += group(settings)
        except Exception as exc:  # noqa: BLE001 - a broken check is itself a finding
            checks.append(_missing(group.__name__.removeprefix("check_"), f"the check failed: {exc}", "-"))
    return checks


def print_checks(checks: Iterable[Check], out: IO[str]) -> int:
    """Print the findings; returns how many are missing."""
    label = {"ok": "ok", "warn": "warn", "missing": "MISSING"}
    problems = 0
    for check in checks:
        line = f"  {label[check.status]:<8} {check.name}"
        if check.detail:
            line += f": {check.detail}"
        print(line, file=out)
        if check.status != "ok" and check.fix:
            print(f"           fix: {check.fix}", file=out)
        problems += check.status == "missing"
    return problems


def doctor_command(settings: Any, *, out: IO[str] | None = None) -> int:
    """``polyvox doctor``: 0 when the profile can run here, 1 when something is missing."""
    out = out or sys.stdout
    engines = ", ".join(f"{k} {settings.engine(k).engine}" for k in ("asr", "mt", "tts", "denoise", "vad_engine"))
    print(f"polyvox doctor: profile '{settings.profile}' ({engines})", file=out)
    problems = print_checks(run_checks(settings), out)
    if problems:
        print(f"{problems} problem{'s' if problems > 1 else ''}: fix {'them' if problems > 1 else 'it'} "
              f"before `.venv/bin/polyvox serve --profile {settings.profile}`", file=out)
        return 1
    print(f"ready: `.venv/bin/polyvox serve --profile {settings.profile}` should start", file=out)
    return 0
