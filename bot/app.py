"""Composition root: settings → engines (loaded once, warmed up), the voice consent
policy and the :class:`~pipeline.session.SessionFactory` every transport makes its
interpretation sessions with."""

from __future__ import annotations

import importlib.util
import json
import time
from typing import TYPE_CHECKING

from loguru import logger

from bot.config import ENGINE_KINDS, OPTIONAL_ENGINE_KINDS, ASRSettings, EngineSettings, Settings
from bot.engines_settings import REMOTE_STAGES
from pipeline.cascade import Engines
from pipeline.engines.base import ASREngine, Engine
from pipeline.engines.calls import StageTimeouts
from pipeline.engines.registry import create_engine, engine_class
from pipeline.errors import ConfigError, EngineUnavailableError
from pipeline.processors.language_id import LanguageIDParams
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, SessionFactory
from pipeline.streaming import StreamingParams

if TYPE_CHECKING:
    from pipeline.engines.remote import RayEnginesConnection
    from voices.consent import VoiceConsent

__all__ = [
    "check_engines",
    "create_asr_engine",
    "interpretation_params",
    "language_id_params",
    "load_engines",
    "remote_connection",
    "segmenter_params",
    "session_factory",
    "voice_consent",
]


def check_engines(settings: Settings) -> None:
    """Resolve every configured engine name without loading anything.

    With ``engines.backend: ray`` only the local stages (VAD, denoise) are resolved here:
    ASR, MT and TTS are built on the engines app's replicas.

    Raises:
        ConfigError: an unknown engine name.
        ImportError: an engine whose extra is not installed.
    """
    remote = settings.engines.backend == "ray"
    for kind in ENGINE_KINDS:
        if remote and kind in REMOTE_STAGES:
            continue  # built on the engines app's replicas, not here
        engine_class(kind, settings.engine(kind).engine)
    if remote and importlib.util.find_spec("ray") is None:
        raise ImportError("engines.backend: ray needs Ray Serve: pip install 'polyvox[ray]'")
    for kind in OPTIONAL_ENGINE_KINDS:
        section = settings.optional_engine(kind)
        if section is not None:
            engine_class(kind, section.engine)
    if not remote:
        for language, route in settings.asr.routes.items():
            try:
                engine_class("asr", route.engine)
            except ConfigError as exc:
                raise ConfigError(f"asr.routes.{language}: {exc}") from None


def create_asr_engine(cfg: ASRSettings) -> ASREngine:
    """The ASR engine of a section: its default engine, routed per language when
    ``routes`` are set (one engine per distinct model, shared by the routes naming it).

    Raises:
        ConfigError: an unknown engine or option (the message names the route).
    """
    default = _build("asr", cfg)
    if not cfg.routes:
        return default  # type: ignore[return-value]
    from pipeline.engines.asr.routed import RoutedASREngine

    shared: dict[str, Engine] = {_identity(cfg): default}
    routes: dict[str, ASREngine] = {}
    for language, route in cfg.routes.items():
        key = _identity(route)
        if key not in shared:
            try:
                shared[key] = _build("asr", route)
            except ConfigError as exc:
                raise ConfigError(f"asr.routes.{language}: {exc}") from None
        routes[language] = shared[key]  # type: ignore[assignment]
    return RoutedASREngine(default, routes)  # type: ignore[arg-type]


def _build(kind: str, cfg: EngineSettings) -> Engine:
    return create_engine(kind, cfg.engine, model=cfg.model, device=cfg.device, options=cfg.options)


def _identity(cfg: EngineSettings) -> str:
    """Settings that build the same engine give the same identity (so it is built once)."""
    return json.dumps([cfg.engine, cfg.model, cfg.device, cfg.options], sort_keys=True, default=str)


def language_id_params(settings: Settings) -> LanguageIDParams:
    """How ``auto`` spoken languages are identified (``languages.identification``)."""
    ident = settings.languages.identification
    return LanguageIDParams(
        threshold=ident.threshold,
        settle_probability=ident.settle_probability,
        agreeing=ident.agreeing,
        recheck_after=ident.recheck_after,
        fallback=ident.fallback,
        candidates=tuple(ident.candidates),
        min_speech_s=ident.min_speech_s,
    )


def load_engines(
    settings: Settings, *, warmup: bool = True, optional: tuple[str, ...] = OPTIONAL_ENGINE_KINDS
) -> Engines:
    """Build, load and warm up the configured engines (blocking; call once per process).

    With ``engines.backend: ray``, ASR, MT and TTS are remote engines on the engines app
    (``polyvox engines serve``): their capabilities come from the deployed engines.

    The optional engines (``events``, ``vc``, ``image``) named in ``optional`` are loaded
    when the profile has them; one whose model is not on this machine (or whose extra
    is not installed) is left out with a warning naming what to do: the server runs
    without that feature rather than not at all.

    Raises:
        ConfigError, ImportError: see :func:`check_engines`.
        EngineUnavailableError: a model is missing (not downloaded, bad path); with
            ``backend: ray``, the cluster or the engines app cannot be reached.
        UnsupportedLanguageError: the configured languages cannot be served.
    """
    check_engines(settings)
    connection = remote_connection(settings) if settings.engines.backend == "ray" else None
    if connection is not None:
        connection.connect()  # before loading anything: an unreachable app is one quick error
    built: dict[str, Engine] = {}
    try:
        for kind in (*ENGINE_KINDS, *(k for k in OPTIONAL_ENGINE_KINDS if k in optional)):
            cfg = settings.engine(kind) if kind in ENGINE_KINDS else settings.optional_engine(kind)
            if cfg is None:
                continue
            if connection is not None and kind in REMOTE_STAGES:
                from pipeline.engines.remote import remote_engine

                engine: Engine = remote_engine(kind, connection)
                engine.load()
                built[kind] = engine
                logger.info(f"{kind} engine '{engine.name}' on Ray Serve ('{connection.app_name}' app)")
                continue
            if kind == "asr" and settings.asr.routes:
                logger.info(
                    "asr routes: "
                    + ", ".join(f"{lang} → {r.engine} {r.model}" for lang, r in sorted(settings.asr.routes.items()))
                )
            try:
                built[kind] = _load_one(kind, cfg, warmup, asr=settings.asr)
            except (EngineUnavailableError, ImportError) as exc:
                if kind in ENGINE_KINDS:
                    raise
                logger.warning(f"{kind} engine '{cfg.engine}' is not available, so that feature is off: {exc}")
    except BaseException:
        for engine in built.values():
            engine.close()
        raise
    engines = Engines(
        denoise=built["denoise"],  # type: ignore[arg-type]
        vad=built["vad_engine"],  # type: ignore[arg-type]
        asr=built["asr"],  # type: ignore[arg-type]
        mt=built["mt"],  # type: ignore[arg-type]
        tts=built["tts"],  # type: ignore[arg-type]
        language_id=language_id_params(settings),
        events=built.get("events"),  # type: ignore[arg-type]
        vc=built.get("vc"),  # type: ignore[arg-type]
        image=built.get("image"),  # type: ignore[arg-type]
    )
    return engines


def remote_connection(settings: Settings) -> RayEnginesConnection:
    """The connection to the engines app that ``engines:`` names (not connected yet)."""
    from pipeline.engines.remote import RayEnginesConnection

    cfg = settings.engines
    return RayEnginesConnection(
        cfg.address,
        cfg.app_name,
        connect_timeout_s=cfg.connect_timeout_s,
        call_timeout_s=cfg.call_timeout_s,
    )


def _load_one(kind: str, cfg: EngineSettings, warmup: bool, *, asr: ASRSettings) -> Engine:
    engine = create_asr_engine(asr) if kind == "asr" else _build(kind, cfg)
    started = time.monotonic()
    logger.info(f"loading {kind} engine '{cfg.engine}'" + (f" ({cfg.model})" if cfg.model else ""))
    try:
        engine.load()
        if warmup:
            engine.warmup()
    except BaseException:
        engine.close()
        raise
    logger.info(f"{kind} engine '{cfg.engine}' ready in {time.monotonic() - started:.2f} s")
    return engine


def segmenter_params(settings: Settings) -> SegmenterParams:
    """The segmenter's parameters from the ``vad`` section."""
    v = settings.vad
    return SegmenterParams(
        threshold=v.threshold,
        min_speech_ms=v.min_speech_ms,
        min_silence_ms=v.min_silence_ms,
        preroll_ms=v.preroll_ms,
        postroll_ms=v.postroll_ms,
        max_utterance_s=v.max_utterance_s,
    )


def interpretation_params(settings: Settings) -> InterpretationParams:
    """How every session of this process interprets, from the settings."""
    voice_params = None
    if settings.voices.capture:
        from voices.capture import VoiceCaptureParams

        voice_params = VoiceCaptureParams(
            first_profile_s=settings.voices.first_profile_s,
            max_speech_s=max(settings.voices.max_capture_s, settings.voices.first_profile_s),
        )
    from pipeline.imagine import ImageParams
    from pipeline.nonverbal import NonverbalParams
    from pipeline.voice_changer import VoiceChangerParams

    live = settings.interpretation
    streaming = None
    if live.streaming:
        policy = live.model_dump(exclude={"streaming", "nonverbal", "voice_changer", "images"})
        if policy["mode"] == "voice":
            policy["mode"] = "simultaneous"  # for those who choose interpretation
        streaming = StreamingParams(**policy)
    return InterpretationParams(
        segmenter=segmenter_params(settings),
        streaming=streaming,
        listener_languages=list(settings.languages.listeners),
        default_language=settings.languages.speaker,
        max_pending=settings.pipeline.max_pending_utterances,
        warn_slow=settings.pipeline.warn_slower_than_realtime,
        voice_capture=settings.voices.capture,
        voice_params=voice_params,
        timeouts=StageTimeouts(
            base_s=settings.pipeline.engine_timeout_s,
            per_audio_s=settings.pipeline.engine_timeout_per_audio_s,
            per_char_s=settings.pipeline.engine_timeout_per_char_s,
        ),
        engine_concurrency=settings.pipeline.engine_concurrency,
        mode="voice" if live.mode == "voice" else "interpret",
        nonverbal=NonverbalParams(**live.nonverbal.model_dump()),
        voice_changer=VoiceChangerParams(**live.voice_changer.model_dump()),
        images=ImageParams(**live.images.model_dump()),
    )


def voice_consent(settings: Settings, engines: Engines | None = None) -> VoiceConsent:
    """The one voice store and consent policy of this process (``voices.data_dir``).

    Raises:
        VoiceStoreError: the folder or database cannot be created or opened.
    """
    from voices.cli import voices_data_dir
    from voices.consent import VoiceConsent
    from voices.store import VoiceStore

    store = VoiceStore(voices_data_dir(settings), vad=engines.vad if engines is not None else None)
    return VoiceConsent(
        store,
        engine=engines.tts if engines is not None else None,
        converter=engines.vc if engines is not None else None,
    )


def session_factory(settings: Settings, engines: Engines, *, consent: VoiceConsent | None = None) -> SessionFactory:
    """What every transport of this process makes its sessions with."""
    return SessionFactory(
        engines,
        interpretation_params(settings),
        consent=consent if consent is not None else voice_consent(settings, engines),
    )
