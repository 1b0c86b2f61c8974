"""Typed configuration: ``config.yaml`` + profile + ``--set`` overrides → :class:`Settings`.

Every problem is reported as one :class:`~pipeline.errors.ConfigError` line that names
the offending key, never a traceback.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.discord_settings import DiscordSettings
from bot.engines_settings import EnginesSettings
from pipeline.errors import ConfigError, UnsupportedLanguageError
from pipeline.languages import AUTO, is_auto, normalize
from transports.webrtc.settings import WebRTCSettings

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENGINE_KINDS",
    "ASRSettings",
    "OPTIONAL_ENGINE_KINDS",
    "EngineSettings",
    "EnginesSettings",
    "ImageSettings",
    "NonverbalSettings",
    "VoiceChangerSettings",
    "InterpretationSettings",
    "LanguageIdentificationSettings",
    "LanguageSettings",
    "PipelineSettings",
    "ServerSettings",
    "Settings",
    "VADSettings",
    "VoicesSettings",
    "find_config",
    "load_settings",
]

#: The configuration shipped with polyvox: the repository's ``config.yaml``, which
#: ``bot/config.yaml`` links to so that installed copies carry it too.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.yaml"

#: Engine sections, in pipeline order. ``vad_engine`` picks the VAD model; ``vad`` tunes
#: the segmentation.
ENGINE_KINDS = ("denoise", "vad_engine", "asr", "mt", "tts")
#: Engine sections a profile may leave out (``engine: none`` turns one off): audio events
#: (non-verbal sounds), voice conversion (the voice changer), text to image.
OPTIONAL_ENGINE_KINDS = ("events", "vc", "image")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineSettings(_Strict):
    """Which engine a stage uses and how it is built.

    Attributes:
        engine: Registered engine name (``pocketsphinx``, ``apertium``, ...).
        model: Hub name or local path of the model, for engines that take one.
        device: ``auto``, ``cpu`` or ``cuda[:N]``, for engines that run on a device.
        options: Extra keyword arguments for the engine's constructor.
    """

    engine: str
    model: str | None = None
    device: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)


class ASRSettings(EngineSettings):
    """The ASR section: the default engine, plus a dedicated model per language.

    Attributes:
        routes: Language → the model that transcribes it, instead of the default one.
            A value is ``"[engine:]model"`` (``"whisper:large-v3-turbo"``; without an
            engine name, the section's ``engine``) or a mapping with ``engine``, ``model``,
            ``device`` and ``options``. Routes take the section's ``device`` unless they
            set one; the section's ``options`` belong to the default engine only. A
            ``null`` route is no route (``--set asr.routes.ja=null`` drops one,
            ``--set asr.routes=null`` all of them).
    """

    routes: dict[str, EngineSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _parse_routes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        routes = data.get("routes")
        if routes is None:
            return {**data, "routes": {}}
        if not isinstance(routes, dict):
            raise ValueError("routes: expected a mapping of language → model")
        engine = data.get("engine")
        device = data.get("device", "auto")
        parsed: dict[str, Any] = {}
        for language, value in routes.items():
            if value is None:
                continue
            try:
                code = _check_language(str(language))
            except ValueError as exc:
                raise ValueError(f"routes.{language}: {exc}") from None
            parsed[code] = _route(value, engine, device, f"routes.{language}")
        return {**data, "routes": parsed}


def _route(value: Any, engine: Any, device: Any, where: str) -> dict[str, Any]:
    """One route as an engine section: "[engine:]model" or a mapping, with the defaults."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError(f"{where}: empty model")
        prefix, sep, rest = text.partition(":")
        if sep and _is_asr_engine(prefix):
            return {"engine": prefix, "model": rest.strip(), "device": device}
        return {"engine": engine, "model": text, "device": device}
    if isinstance(value, dict):
        return {"engine": engine, "device": device, **value}
    raise ValueError(f"{where}: expected \"[engine:]model\" or a mapping, got {value!r}")


def _is_asr_engine(name: str) -> bool:
    from pipeline.engines.registry import engine_names

    return name in engine_names("asr")


class VADSettings(_Strict):
    """Utterance segmentation; see ``pipeline.segmenter.SegmenterParams``."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_speech_ms: int = Field(250, ge=0)
    min_silence_ms: int = Field(500, ge=0)
    preroll_ms: int = Field(200, ge=0)
    postroll_ms: int = Field(150, ge=0)
    max_utterance_s: float = Field(15.0, ge=1.0, le=120.0)


class LanguageIdentificationSettings(_Strict):
    """How a spoken language set to ``auto`` is identified from speech.

    See ``pipeline.processors.language_id.LanguageIDParams`` for each value.
    """

    threshold: float = Field(0.5, gt=0.0, le=1.0)
    settle_probability: float = Field(0.85, gt=0.0, le=1.0)
    agreeing: int = Field(2, ge=1, le=10)
    recheck_after: int = Field(2, ge=1, le=100)
    fallback: str | None = None
    candidates: list[str] = Field(default_factory=list)
    min_speech_s: float = Field(1.0, ge=0.0, le=30.0)

    @field_validator("fallback")
    @classmethod
    def _fallback_code(cls, value: str | None) -> str | None:
        return None if value is None else _check_language(value)

    @field_validator("candidates")
    @classmethod
    def _candidate_codes(cls, value: list[str]) -> list[str]:
        return [_check_language(v) for v in value]


class LanguageSettings(_Strict):
    """Spoken and listener languages, normalised to ISO 639-1 codes (``en-US`` → ``en``).

    ``speaker: auto`` identifies each participant's language from their speech
    (``identification``).
    """

    speaker: str = "en"
    listeners: list[str] = Field(default_factory=lambda: ["es"])
    identification: LanguageIdentificationSettings = LanguageIdentificationSettings()

    @field_validator("speaker")
    @classmethod
    def _speaker_code(cls, value: str) -> str:
        return AUTO if is_auto(value) else _check_language(value)

    @field_validator("listeners")
    @classmethod
    def _listener_codes(cls, value: list[str]) -> list[str]:
        return [_check_language(v) for v in value]


class PipelineSettings(_Strict):
    """Behaviour of the processors around the engines."""

    warn_slower_than_realtime: bool = True
    max_pending_utterances: int = Field(8, ge=1)
    engine_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    engine_timeout_per_audio_s: float = Field(2.0, ge=0.0, le=100.0)
    engine_timeout_per_char_s: float = Field(0.05, ge=0.0, le=10.0)
    engine_concurrency: int = Field(4, ge=1, le=64)


class VoicesSettings(_Strict):
    """Voice cloning: automatic capture from first utterances, enrolled profiles."""

    data_dir: str = "~/.local/share/polyvox/voices"
    capture: bool = True
    first_profile_s: float = Field(6.0, gt=0.0, le=60.0)
    max_capture_s: float = Field(30.0, gt=0.0, le=120.0)


NonverbalKind = Literal["laughs", "cries", "sighs", "gasps", "screams", "coughs"]
_DEFAULT_KINDS: tuple[NonverbalKind, ...] = ("laughs", "cries", "sighs")


class NonverbalSettings(_Strict):
    """Laughter, crying and sighs carried through; see ``pipeline.nonverbal.NonverbalParams``."""

    enabled: bool = True
    kinds: list[NonverbalKind] = Field(default_factory=lambda: list(_DEFAULT_KINDS))
    threshold: float = Field(0.3, gt=0.0, le=1.0)
    gate_dbfs: float = Field(-40.0, ge=-90.0, le=0.0)
    min_ms: int = Field(300, ge=50, le=10000)
    gap_ms: int = Field(200, ge=0, le=5000)
    max_s: float = Field(8.0, gt=0.0, le=60.0)


class VoiceChangerSettings(_Strict):
    """Voice mode; see ``pipeline.voice_changer.VoiceChangerParams``."""

    default_voice: str | None = None
    gate_dbfs: float = Field(-50.0, ge=-90.0, le=0.0)
    gap_ms: int = Field(400, ge=20, le=10000)
    idle_flush_ms: int = Field(250, ge=20, le=10000)
    max_stretch_s: float = Field(10.0, gt=0.0, le=120.0)


class ImageSettings(_Strict):
    """Speech-to-image; see ``pipeline.imagine.ImageParams``."""

    trigger: str | None = None
    per_user: int = Field(3, ge=1, le=1000)
    window_s: float = Field(60.0, gt=0.0, le=86400.0)
    request_s: float = Field(30.0, gt=0.0, le=600.0)
    max_wait_s: float = Field(600.0, gt=0.0, le=3600.0)


class InterpretationSettings(_Strict):
    """Live interpretation; see ``pipeline.streaming.StreamingParams``.

    ``streaming: false`` (or an ASR engine that cannot stream) interprets each utterance
    once its speaker paused for ``vad.min_silence_ms``. ``mode: voice`` makes every
    room a voice changer (speech heard in another voice, no text; a ``vc`` engine is
    needed); participants may choose either mode for themselves.
    """

    streaming: bool = True
    mode: Literal["simultaneous", "consecutive", "voice"] = "simultaneous"
    speculate: bool = True
    speculate_after_ms: int = Field(96, ge=0, le=2000)
    hangover_sentence_ms: int = Field(250, ge=0, le=5000)
    hangover_ms: int = Field(400, ge=0, le=5000)
    partial_interval_ms: int = Field(300, ge=0, le=10000)
    stable_partials: int = Field(2, ge=1, le=10)
    commit_min_words: int = Field(4, ge=1, le=100)
    commit_gap_ms: int = Field(150, ge=0, le=5000)
    commit_max_wait_s: float = Field(2.5, gt=0.0, le=60.0)
    nonverbal: NonverbalSettings = NonverbalSettings()
    voice_changer: VoiceChangerSettings = VoiceChangerSettings()
    images: ImageSettings = ImageSettings()


class ServerSettings(_Strict):
    """Where ``polyvox serve`` listens."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class _Profile(_Strict):
    asr: ASRSettings
    mt: EngineSettings
    tts: EngineSettings
    denoise: EngineSettings = EngineSettings(engine="none")
    vad_engine: EngineSettings = EngineSettings(engine="silero")
    events: EngineSettings | None = None
    vc: EngineSettings | None = None
    image: EngineSettings | None = None


class Settings(_Strict):
    """The resolved configuration: one profile's engines with every override applied."""

    profile: str
    asr: ASRSettings
    mt: EngineSettings
    tts: EngineSettings
    denoise: EngineSettings
    vad_engine: EngineSettings
    events: EngineSettings | None = None
    vc: EngineSettings | None = None
    image: EngineSettings | None = None
    vad: VADSettings = VADSettings()
    languages: LanguageSettings = LanguageSettings()
    pipeline: PipelineSettings = PipelineSettings()
    interpretation: InterpretationSettings = InterpretationSettings()
    server: ServerSettings = ServerSettings()
    discord: DiscordSettings = DiscordSettings()
    webrtc: WebRTCSettings = WebRTCSettings()
    voices: VoicesSettings = VoicesSettings()
    engines: EnginesSettings = EnginesSettings()

    def engine(self, kind: str) -> EngineSettings:
        """The settings of engine section ``kind`` (one of ``ENGINE_KINDS``)."""
        return getattr(self, kind)

    def optional_engine(self, kind: str) -> EngineSettings | None:
        """An optional engine section (``OPTIONAL_ENGINE_KINDS``), ``None`` when the
        profile has none or it is set to ``engine: none``."""
        section = getattr(self, kind)
        return None if section is None or section.engine == "none" else section


_SECTIONS = (
    "vad", "languages", "pipeline", "interpretation", "server", "webrtc", "discord", "voices", "engines",
)
_TOP_LEVEL = {"profile", "profiles", *_SECTIONS, *ENGINE_KINDS, *OPTIONAL_ENGINE_KINDS}


def _check_language(value: str) -> str:
    """The registry's code for ``value`` ("en-US" → "en"); unknown codes are named."""
    try:
        return normalize(value)
    except UnsupportedLanguageError as exc:
        # pydantic reports a ValueError as "<key>: <message>".
        raise ValueError(str(exc)) from None


def find_config(explicit: str | Path | None = None) -> Path:
    """The configuration file to read: ``explicit``, else ``./config.yaml``, else the default."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        return path
    local = Path.cwd() / "config.yaml"
    if local.is_file():
        return local
    return DEFAULT_CONFIG_PATH


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw_value = text.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not sep or not key.strip() or any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set vad.min_silence_ms=400")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return parts, value


def _apply_override(raw: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {text!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _format_validation(error: ValidationError, prefix: str = "") -> str:
    # A typo shows up as an unknown key plus a missing one: name the typo.
    first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    where = ".".join(str(p) for p in first["loc"])
    where = f"{prefix}{where}" if where else prefix.rstrip(".")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
    extra = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"{where}: {message}{extra}"


def load_settings(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Settings:
    """Read a configuration file, pick a profile and apply ``--set`` overrides.

    Args:
        path: The YAML file; ``None`` finds one with :func:`find_config`.
        profile: Profile to use instead of the file's ``profile:``.
        overrides: ``section.key=value`` strings; values are parsed as YAML, so numbers,
            booleans and lists work (``--set languages.listeners=[es,fr]``).

    Returns:
        The validated settings.

    Raises:
        ConfigError: One line naming the file and key that is wrong.
    """
    config_path = find_config(path)
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{config_path}:{where} not valid YAML") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping of sections at the top level")

    for text in overrides:
        parts, value = _parse_override(text)
        _apply_override(raw, parts, value, text)

    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        known = ", ".join(sorted(_TOP_LEVEL))
        raise ConfigError(f"{config_path}: unknown key '{unknown[0]}' (known keys: {known})")

    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{config_path}: 'profiles' must map profile names to engine sections")
    for name, body in profiles.items():
        try:
            _Profile.model_validate(body or {})
        except ValidationError as exc:
            raise ConfigError(f"{config_path}: {_format_validation(exc, f'profiles.{name}.')}") from None

    chosen = profile or raw.get("profile") or "offline"
    if chosen not in profiles:
        names = ", ".join(sorted(profiles))
        raise ConfigError(f"unknown profile '{chosen}' (choose from: {names})")

    resolved: dict[str, Any] = {"profile": chosen}
    profile_body = profiles[chosen] or {}
    for kind in ENGINE_KINDS:
        over = raw.get(kind) or {}
        if not isinstance(over, dict):
            raise ConfigError(f"{config_path}: {kind}: expected a section, got {over!r}")
        base = profile_body.get(kind) or (_Profile.model_fields[kind].default.model_dump())
        resolved[kind] = _merge(base, over)
    for kind in OPTIONAL_ENGINE_KINDS:
        over = raw.get(kind) or {}
        if not isinstance(over, dict):
            raise ConfigError(f"{config_path}: {kind}: expected a section, got {over!r}")
        base = profile_body.get(kind) or {}
        if base or over:
            resolved[kind] = _merge(base, over)
    for section in _SECTIONS:
        if raw.get(section) is not None:
            resolved[section] = raw[section]
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(f"{config_path}: {_format_validation(exc)}") from None
