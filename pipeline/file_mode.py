"""File mode: recordings pushed through the same session a live room uses.

Each input file is one participant. :class:`FileTransport` plays their audio in as
20 ms ``UserAudioRawFrame`` exactly as a live transport would deliver it, all
participants interleaved on one clock, either at real-time pace or as fast as the
engines go, and collects what comes out: captions, interpretation audio and one
result per utterance. The pipeline is an ordinary
:class:`~pipeline.session.InterpretationSession`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, StartFrame, UserAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipeline.audio import resample, write_wav
from pipeline.cascade import Engines
from pipeline.frames import (
    CaptionFrame,
    ImageFrame,
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    InterpretationResult,
    InterpretationResultFrame,
    NoticeFrame,
    TranslationsDoneFrame,
    UtteranceAudioFrame,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.latency import LatencyStats, SessionStats
from pipeline.segmenter import SegmenterParams
from pipeline.session import InterpretationParams, InterpretationSession

__all__ = [
    "FRAME_MS",
    "FileProgress",
    "FileTransport",
    "FileTranslation",
    "SpeakerTrack",
    "run_cascade_on_tracks",
    "write_outputs",
]

#: Audio per frame, as transports deliver it.
FRAME_MS = 20
#: Silence between consecutive utterances in the output file.
GAP_SECONDS = 0.3


@dataclass
class SpeakerTrack:
    """One participant's recording: 16 kHz mono int16 ``pcm`` spoken in ``language``."""

    user_id: str
    pcm: np.ndarray
    language: str
    sample_rate: int = 16000


@dataclass
class FileTranslation:
    """What came out of the session for a set of tracks.

    Attributes:
        utterances: The result of every utterance that produced a transcript and was not
            dropped, in order of speech end.
        audio: Synthesized audio per utterance id and language.
        sample_rate: Rate of ``audio``.
        dropped: Utterances a stage gave up on, with the stage and reason.
        captions: Every caption as it came (partial and final), with the time it came,
            in seconds since the input started.
        errors: Error messages the pipeline reported.
        wall_seconds: How long the run took.
        input_seconds: Length of the longest track.
        started_at: ``time.monotonic()`` when the first audio was fed.
        stats: Speculations, clause commits and partial captions of the session.
        pictures: Pictures asked for in the recordings (speech-to-image), as
            ``{"user_id", "caption", "prompt", "language", "at", "png"}`` in the order
            they were drawn.
        notices: What the session told a speaker (``{"user_id", "kind", "text"}``), such
            as a picture request that could not be drawn.
    """

    utterances: list[InterpretationResult] = field(default_factory=list)
    audio: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    sample_rate: int = 16000
    dropped: list[InterpretationResult] = field(default_factory=list)
    captions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    input_seconds: float = 0.0
    started_at: float = 0.0
    stats: SessionStats = field(default_factory=SessionStats)
    pictures: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)

    def latency(self) -> LatencyStats:
        """Per-stage latency statistics over the utterances."""
        return LatencyStats.from_utterances(r.utterance for r in self.utterances)


@dataclass
class FileProgress:
    """How far a file run is (for progress bars).

    Attributes:
        fed_s: Seconds of input fed to the pipeline.
        done_s: Input seconds up to the end of the latest finished utterance (all of
            the input once the run is over).
        total_s: Length of the input.
        utterances: Utterances finished so far.
    """

    fed_s: float
    done_s: float
    total_s: float
    utterances: int = 0


class FileInputTransport(BaseInputTransport):
    """Recordings in: ``feed`` pushes one participant's 20 ms frame into the pipeline."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TransportParams(audio_in_enabled=True, audio_in_sample_rate=16000), **kwargs)
        self.ready = asyncio.Event()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready.set()

    async def feed(self, user_id: str, pcm: np.ndarray, sample_rate: int = 16000) -> None:
        # Pushed straight downstream, not through the base class's audio queue: that
        # queue is dropped at EndFrame, and a file's last frames must all be heard.
        await self.push_frame(
            UserAudioRawFrame(audio=pcm.tobytes(), sample_rate=sample_rate, num_channels=1, user_id=user_id)
        )


class FileOutputTransport(BaseOutputTransport):
    """Collects captions, interpretation audio, results, pictures and notices (nothing is played)."""

    #: Frames that end here, bypassing BaseOutputTransport's media sender.
    routed = (
        CaptionFrame,
        ImageFrame,
        InterpretationAudioFrame,
        InterpretationDoneFrame,
        InterpretationResultFrame,
        NoticeFrame,
        TranslationsDoneFrame,
        UtteranceAudioFrame,
        UtteranceDroppedFrame,
        UtteranceTranscriptionFrame,
        UtteranceTranslationFrame,
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TransportParams(audio_out_enabled=False), **kwargs)
        self.results: list[InterpretationResult] = []
        self.chunks: dict[int, dict[str, list[np.ndarray]]] = {}
        self.captions: list[dict[str, Any]] = []
        self.pictures: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.tts_rate: int | None = None
        self.clock_start: float | None = None
        #: Called with each result as it comes (progress reporting).
        self.on_result: Callable[[InterpretationResult], None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, self.routed):
            await FrameProcessor.process_frame(self, frame, direction)
            self._collect(frame)
            return
        await super().process_frame(frame, direction)

    def _collect(self, frame: Frame) -> None:
        if isinstance(frame, InterpretationAudioFrame) and frame.utterance is not None:
            frame.utterance.mark("first_audio_out")
            self.tts_rate = frame.sample_rate
            per_lang = self.chunks.setdefault(frame.utterance.id, {})
            per_lang.setdefault(frame.target_language, []).append(np.frombuffer(frame.audio, dtype=np.int16))
        elif isinstance(frame, CaptionFrame):
            at = self._since_start()
            self.captions.append(
                {
                    "utterance_id": frame.utterance.id,
                    "user_id": frame.user_id,
                    "language": frame.language,
                    "text": frame.text,
                    "translations": dict(frame.translations),
                    "final": frame.final,
                    "at": None if at is None else round(at, 3),
                }
            )
        elif isinstance(frame, InterpretationResultFrame):
            self.results.append(frame.result)
            if self.on_result is not None:
                self.on_result(frame.result)
        elif isinstance(frame, ImageFrame):
            at = self._since_start()
            self.pictures.append(
                {
                    "user_id": frame.user_id,
                    "caption": frame.caption,
                    "prompt": frame.prompt,
                    "language": frame.language,
                    "at": None if at is None else round(at, 3),
                    "png": frame.png,
                }
            )
        elif isinstance(frame, NoticeFrame):
            self.notices.append({"user_id": frame.user_id, "kind": frame.kind, "text": frame.text})

    def _since_start(self) -> float | None:
        """Seconds since the input started, when it has."""
        return time.monotonic() - self.clock_start if self.clock_start is not None else None


class FileTransport(BaseTransport):
    """Recordings in, results out: file mode's transport."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._input = FileInputTransport(name=f"{self.name}#input")
        self._output = FileOutputTransport(name=f"{self.name}#output")

    def input(self) -> FileInputTransport:
        return self._input

    def output(self) -> FileOutputTransport:
        return self._output


async def run_cascade_on_tracks(
    engines: Engines,
    tracks: list[SpeakerTrack],
    listeners: list[str],
    *,
    params: InterpretationParams | None = None,
    segmenter: SegmenterParams | None = None,
    realtime: bool = False,
    warn_slow: bool | None = None,
    progress: bool = True,
    consent: Any | None = None,
    on_progress: Callable[[FileProgress], None] | None = None,
) -> FileTranslation:
    """Push the tracks through a fresh session and collect the results.

    Args:
        engines: Loaded engines.
        tracks: One per participant; all start at time zero.
        listeners: Languages to interpret into.
        params: How to interpret (``bot.app.interpretation_params``); default values
            otherwise. ``listeners`` and the backlog limit (none unless ``realtime``)
            override it.
        segmenter: Segmentation parameters (overrides ``params.segmenter``).
        realtime: Pace the audio like a live call (for latency measurements); otherwise
            push it as fast as the pipeline takes it.
        warn_slow: Warn when ASR runs slower than real time (overrides ``params``).
        progress: Log progress while feeding.
        consent: The voice consent policy (``voices.consent.VoiceConsent``).
        on_progress: Told how far the run is while feeding (a few times a second) and
            whenever an utterance is finished, and once at the end.
    """
    from dataclasses import replace

    base = params or InterpretationParams()
    changes: dict[str, Any] = {
        "listener_languages": list(listeners),
        "default_language": tracks[0].language if tracks else base.default_language,
        "max_pending": 8 if realtime else None,
    }
    if segmenter is not None:
        changes["segmenter"] = segmenter
    if warn_slow is not None:
        changes["warn_slow"] = warn_slow
    transport = FileTransport(name="file")
    session = InterpretationSession(engines, transport, replace(base, **changes), consent=consent, name="file")
    for track in tracks:
        await session.join(track.user_id, language=track.language)

    frame_samples = 16000 * FRAME_MS // 1000
    total_frames = max((len(t.pcm) + frame_samples - 1) // frame_samples for t in tracks) if tracks else 0
    feeder = transport.input()
    collector = transport.output()
    total_s = total_frames * FRAME_MS / 1000
    tally = FileProgress(0.0, 0.0, total_s)

    def tell() -> None:
        if on_progress is not None:
            on_progress(FileProgress(tally.fed_s, tally.done_s, total_s, tally.utterances))

    def finished_one(result: InterpretationResult) -> None:
        tally.utterances += 1
        tally.done_s = min(total_s, max(tally.done_s, result.utterance.end))
        tell()

    collector.on_result = finished_one

    started = time.monotonic()
    await session.start()
    await feeder.ready.wait()
    begin = collector.clock_start = time.monotonic()
    next_report = begin + 5.0
    next_tell = begin
    for index in range(total_frames):
        for track in tracks:
            piece = track.pcm[index * frame_samples : (index + 1) * frame_samples]
            if len(piece):
                await feeder.feed(track.user_id, piece)
        if realtime:
            due = begin + (index + 1) * FRAME_MS / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        elif index % 50 == 49:
            await asyncio.sleep(0)  # let the cascade work while we feed
        if progress and time.monotonic() >= next_report:
            next_report += 5.0
            logger.info(f"fed {(index + 1) * FRAME_MS / 1000:.0f} s of {total_frames * FRAME_MS / 1000:.0f} s")
        if on_progress is not None and (time.monotonic() >= next_tell or index == total_frames - 1):
            next_tell = time.monotonic() + 0.2
            tally.fed_s = (index + 1) * FRAME_MS / 1000
            tell()
    await session.end_of_input()
    tally.done_s = total_s
    tell()

    finished = [r for r in collector.results if r.dropped is None and r.transcript]
    utterances = sorted(finished, key=lambda r: (r.utterance.end, r.utterance.id))
    audio = {
        uid: {lang: np.concatenate(parts) for lang, parts in per_lang.items()}
        for uid, per_lang in collector.chunks.items()
    }
    return FileTranslation(
        utterances=utterances,
        audio=audio,
        sample_rate=collector.tts_rate or engines.tts.sample_rate,
        dropped=[r for r in collector.results if r.dropped is not None],
        captions=collector.captions,
        errors=list(session.errors),
        wall_seconds=time.monotonic() - started,
        input_seconds=total_frames * FRAME_MS / 1000,
        started_at=begin,
        stats=session.stats,
        pictures=collector.pictures,
        notices=collector.notices,
    )


def write_outputs(
    result: FileTranslation,
    target: str,
    out_wav: str | Path,
    captions: str | Path | None = None,
    *,
    out_rate: int | None = None,
    inputs: list[str] | None = None,
) -> dict[str, Any]:
    """Write the interpretation of every utterance, in order, and the captions JSON.

    Pictures asked for in the recordings are written beside ``out_wav`` as
    ``<name>.picture-<n>.png`` and listed under ``pictures`` in the document.

    Returns:
        The captions document (also written to ``captions`` when given).
    """
    rate = out_rate or result.sample_rate
    gap = np.zeros(int(GAP_SECONDS * rate), dtype=np.int16)
    pieces: list[np.ndarray] = []
    cursor = 0
    entries = []
    for interpreted in result.utterances:
        entry = interpreted.summary()
        speech = result.audio.get(interpreted.id, {}).get(target)
        if speech is not None and len(speech):
            if rate != result.sample_rate:
                speech = resample(speech, result.sample_rate, rate)
            entry["output"] = {"start": round(cursor / rate, 3), "end": round((cursor + len(speech)) / rate, 3)}
            pieces += [speech, gap]
            cursor += len(speech) + len(gap)
        else:
            entry["output"] = None
        entries.append(entry)
    audio = np.concatenate(pieces[:-1]) if pieces else np.zeros(0, dtype=np.int16)
    write_wav(out_wav, audio, rate)
    pictures = []
    for number, shown in enumerate(result.pictures, start=1):
        png = Path(out_wav).with_suffix(f".picture-{number}.png")
        png.write_bytes(shown["png"])
        pictures.append({**{k: v for k, v in shown.items() if k != "png"}, "file": str(png)})
    document = {
        "inputs": inputs or [],
        "target_language": target,
        "output": str(out_wav),
        "sample_rate": rate,
        "utterances": entries,
        "dropped": [
            {
                "id": r.id,
                "user_id": r.user_id,
                "start": round(r.utterance.start, 3),
                "end": round(r.utterance.end, 3),
                "stage": r.dropped[0],
                "reason": r.dropped[1],
            }
            for r in result.dropped
            if r.dropped is not None
        ],
        "captions": result.captions,
        "pictures": pictures,
        "latency": result.latency().as_dict(),
        "live": result.stats.as_dict(),
        "wall_seconds": round(result.wall_seconds, 3),
        "input_seconds": round(result.input_seconds, 3),
    }
    if captions is not None:
        path = Path(captions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return document
