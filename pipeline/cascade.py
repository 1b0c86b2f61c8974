"""The cascade: the engines of one process and the processors of one room.

``pipeline.session.InterpretationSession`` builds every pipeline as
``[transport.input(), *build_cascade(...), transport.output()]`` — for file mode, WebRTC
rooms, Discord channels and phone calls alike: one code path for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from pipeline.engines.base import (
    ASREngine,
    AudioEventEngine,
    DenoiseEngine,
    Engine,
    ImageEngine,
    MTEngine,
    TTSEngine,
    VADEngine,
    VoiceConversionEngine,
)
from pipeline.engines.calls import StageTimeouts
from pipeline.errors import UnsupportedLanguageError
from pipeline.languages import LanguageSupport, display_name, is_auto
from pipeline.latency import SessionStats
from pipeline.processors.asr import ASRProcessor
from pipeline.processors.audio_input import AudioInputProcessor
from pipeline.processors.denoise import DenoiseProcessor
from pipeline.processors.language_id import LanguageIDParams, LanguageIDProcessor
from pipeline.processors.recognition_feedback import RecognitionFeedbackProcessor
from pipeline.processors.results import InterpretationResultProcessor
from pipeline.processors.speculation import SpeculationGateProcessor
from pipeline.processors.streaming_asr import StreamingASRProcessor
from pipeline.processors.translate import TranslationProcessor
from pipeline.processors.tts import TTSProcessor
from pipeline.processors.vad import VADSegmenterProcessor
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams
from pipeline.streaming import StreamingParams

__all__ = ["Engines", "build_cascade"]


@dataclass
class Engines:
    """The loaded engines of one process, shared by every room.

    ``events`` (non-verbal sounds), ``vc`` (the voice changer) and ``image``
    (speech-to-image) are optional: a profile without one simply lacks that feature.
    """

    denoise: DenoiseEngine
    vad: VADEngine
    asr: ASREngine
    mt: MTEngine
    tts: TTSEngine
    #: How ``auto`` spoken languages are identified with these engines.
    language_id: LanguageIDParams = field(default_factory=LanguageIDParams)
    events: AudioEventEngine | None = None
    vc: VoiceConversionEngine | None = None
    image: ImageEngine | None = None
    _support: LanguageSupport | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def languages(self) -> LanguageSupport:
        """What these engines can recognise, translate and speak (worked out once)."""
        if self._support is None:
            self._support = LanguageSupport.from_engines(self.asr, self.mt, self.tts)
        return self._support

    def all(self) -> list[Engine]:
        """Every engine, in pipeline order (the optional ones that are loaded last)."""
        extras = [e for e in (self.events, self.vc, self.image) if e is not None]
        return [self.denoise, self.vad, self.asr, self.mt, self.tts, *extras]

    def check_languages(self, speakers: list[str], listeners: list[str]) -> None:
        """Fail early, with one line, when a speaker → listener route cannot be served.

        Raises:
            UnsupportedLanguageError: the first route that ASR, MT or TTS cannot serve.
        """
        support = self.languages
        for lang in speakers:
            if is_auto(lang):  # identified from speech: any recognised language
                continue
            if not support.can_recognise(lang):
                raise UnsupportedLanguageError(
                    f"asr engine '{self.asr.name}' does not recognise {display_name(lang)} ('{lang}') "
                    f"(it knows: {', '.join(sorted(support.recognise))})"
                )
            for target in listeners:
                if target == lang:
                    continue
                if not self.mt.supports(lang, target):
                    raise UnsupportedLanguageError(
                        f"mt engine '{self.mt.name}' cannot translate {lang}→{target} "
                        f"(it can: {_some_pairs(self.mt.pairs(), lang)})"
                    )
        for target in listeners:
            if not support.can_speak(target):
                raise UnsupportedLanguageError(
                    f"tts engine '{self.tts.name}' cannot speak {display_name(target)} ('{target}') "
                    f"(it speaks: {', '.join(sorted(support.speak))})"
                )

    def close(self) -> None:
        """Release every engine's resources."""
        for engine in self.all():
            try:
                engine.close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                logger.warning(f"closing {engine.name} failed: {exc}")


def _some_pairs(pairs: list[tuple[str, str]], source: str, limit: int = 12) -> str:
    """The pairs an MT engine offers, those from ``source`` first, cut to ``limit``.

    A many-to-many model (NLLB: ~5,700 pairs) must not turn one error into a page.
    """
    ordered = sorted(pairs, key=lambda p: (p[0] != source, p))
    shown = ", ".join(f"{s}→{t}" for s, t in ordered[:limit])
    more = len(ordered) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def build_cascade(
    engines: Engines,
    room: Room,
    *,
    segmenter: SegmenterParams | None = None,
    warn_slow: bool = True,
    max_pending: int | None = 8,
    voice_capture: bool = True,
    consent: Any | None = None,
    voice_params: Any | None = None,
    streaming: StreamingParams | None = None,
    stats: SessionStats | None = None,
    timeouts: StageTimeouts | None = None,
    concurrency: int = 4,
    nonverbal: Any | None = None,
    voice_changer: Any | None = None,
    images: Any | None = None,
    vad_threshold: float | None = None,
) -> list[FrameProcessor]:
    """The processors of one room, input audio → interpretation audio, in order.

    Args:
        engines: Loaded engines (shared across rooms).
        room: This room's participants and languages.
        segmenter: Utterance segmentation parameters.
        warn_slow: Warn when ASR runs slower than real time.
        max_pending: Per-participant backlog limit of each stage (``None``: unlimited,
            for file mode where input arrives faster than real time on purpose).
        voice_capture: Clone each participant from their first utterances, when the TTS
            engine clones voices (``voices.VoiceCaptureProcessor`` after ASR).
        consent: The voice consent policy (``voices.consent.VoiceConsent``).
        voice_params: ``voices.capture.VoiceCaptureParams``.
        streaming: Live interpretation policy; used when the ASR engine streams
            (``supports_streaming``): recognition while people speak, speculative
            endpointing, simultaneous mode. ``None``: whole utterances only.
        stats: Where the streaming stage counts speculations and captions.
        timeouts: Deadlines of engine calls (``pipeline.engines.calls``).
        concurrency: Engine calls of one stage running at once.
        nonverbal: ``pipeline.nonverbal.NonverbalParams``: laughter, crying and sighs
            carried through (with an ``events`` engine).
        voice_changer: ``pipeline.voice_changer.VoiceChangerParams``: voice mode (with a
            ``vc`` engine).
        images: ``pipeline.imagine.ImageParams``: speech-to-image requests.
        vad_threshold: The VAD's speech threshold (for the non-verbal gate beside it).

    The last processor, :class:`InterpretationResultProcessor`, sends one
    ``InterpretationResultFrame`` per finished utterance.
    """
    stream = streaming is not None and engines.asr.supports_streaming
    segmenter = segmenter or SegmenterParams()
    budget: dict[str, Any] = {"timeouts": timeouts, "concurrency": concurrency}
    language_id = LanguageIDProcessor(engines.asr, room, engines.language_id, max_pending=max_pending, **budget)
    asr: FrameProcessor
    if stream:
        asr = StreamingASRProcessor(
            engines.asr, room, streaming, longest_hangover_ms=segmenter.min_silence_ms, stats=stats,
            warn_slow=warn_slow, **budget,
        )
    else:
        asr = ASRProcessor(engines.asr, warn_slow=warn_slow, max_pending=max_pending, **budget)
    processors: list[FrameProcessor] = [
        AudioInputProcessor(room),
        DenoiseProcessor(engines.denoise, **budget),
    ]
    if engines.vc is not None:
        from pipeline.processors.voice_changer import VoiceChangerProcessor

        processors.append(VoiceChangerProcessor(engines.vc, room, voice_changer, **budget))
    with_sounds = engines.events is not None and nonverbal is not None
    if with_sounds:
        from pipeline.processors.nonverbal_gate import NonverbalGateProcessor

        processors.append(
            NonverbalGateProcessor(
                engines.vad, room, nonverbal,
                speech_threshold=vad_threshold if vad_threshold is not None else segmenter.threshold, **budget,
            )
        )
    processors += [
        # Speech of someone whose language is still being identified is recognised whole
        # (after identification), not streamed: a stream needs its language up front.
        VADSegmenterProcessor(
            engines.vad, room, segmenter, streaming=stream, whole=language_id.needs_identification, **budget
        ),
        language_id,
        asr,
        RecognitionFeedbackProcessor(language_id),
    ]
    if voice_capture and engines.tts.clones_voices:
        from voices.capture_processor import VoiceCaptureProcessor

        processors.append(
            VoiceCaptureProcessor(engines.tts, engines.vad, room, consent=consent, params=voice_params)  # type: ignore[arg-type]
        )
    processors += [
        TranslationProcessor(engines.mt, room, max_pending=max_pending, **budget),
        TTSProcessor(engines.tts, room, max_pending=max_pending, **budget),
    ]
    if stream:
        processors.append(SpeculationGateProcessor())
    if with_sounds:
        from pipeline.processors.nonverbal import NonverbalProcessor

        processors.append(
            NonverbalProcessor(
                engines.events, room, nonverbal,  # type: ignore[arg-type]
                output_rate=engines.tts.sample_rate, converter=engines.vc, timeouts=timeouts,
            )
        )
    if images is not None:
        from pipeline.processors.imagine import ImageRequestProcessor

        processors.append(ImageRequestProcessor(engines.image, engines.mt, room, images, timeouts=timeouts))
    processors.append(InterpretationResultProcessor())
    return processors
