"""File mode: recordings pushed through the same cascade a live room uses.

Each input file is one participant. Their audio is cut into 20 ms
``UserAudioRawFrame`` exactly as a transport would deliver it, all participants
interleaved on one clock, either at real-time pace or as fast as the engines go.
A collector at the end of the pipeline gathers transcripts, translations and the
synthesized audio per utterance.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, UserAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.audio import resample, write_wav
from pipeline.cascade import Engines, build_cascade
from pipeline.frames import (
    InterpretationAudioFrame,
    InterpretationDoneFrame,
    Utterance,
    UtteranceDroppedFrame,
    UtteranceTranscriptionFrame,
    UtteranceTranslationFrame,
)
from pipeline.latency import LatencyStats
from pipeline.room import Room
from pipeline.segmenter import SegmenterParams

__all__ = [
    "FRAME_MS",
    "FileTranslation",
    "SpeakerTrack",
    "UtteranceCollector",
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
    """What came out of the cascade for a set of tracks.

    Attributes:
        utterances: Every utterance that produced a transcript, in order of speech end.
        audio: Synthesized audio per utterance id and language.
        sample_rate: Rate of ``audio``.
        dropped: Utterances a stage gave up on, with the stage and reason.
        errors: Error messages the pipeline reported.
        wall_seconds: How long the run took.
        input_seconds: Length of the longest track.
    """

    utterances: list[Utterance] = field(default_factory=list)
    audio: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    sample_rate: int = 16000
    dropped: list[tuple[Utterance, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    input_seconds: float = 0.0

    def latency(self) -> LatencyStats:
        """Per-stage latency statistics over the utterances."""
        return LatencyStats.from_utterances(self.utterances)


class UtteranceCollector(FrameProcessor):
    """Pipeline sink that gathers everything the cascade produces, per utterance."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.utterances: dict[int, Utterance] = {}
        self.chunks: dict[int, dict[str, list[np.ndarray]]] = {}
        self.sample_rate: int | None = None
        self.dropped: list[tuple[Utterance, str, str]] = []
        self.finished: dict[int, set[str]] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UtteranceTranscriptionFrame) and frame.utterance is not None:
            self.utterances[frame.utterance.id] = frame.utterance
        elif isinstance(frame, UtteranceTranslationFrame) and frame.utterance is not None:
            self.utterances[frame.utterance.id] = frame.utterance
        elif isinstance(frame, InterpretationAudioFrame) and frame.utterance is not None:
            frame.utterance.mark("first_audio_out")
            self.sample_rate = frame.sample_rate
            per_lang = self.chunks.setdefault(frame.utterance.id, {})
            per_lang.setdefault(frame.target_language, []).append(
                np.frombuffer(frame.audio, dtype=np.int16)
            )
        elif isinstance(frame, InterpretationDoneFrame):
            self.finished.setdefault(frame.utterance.id, set()).add(frame.target_language)
        elif isinstance(frame, UtteranceDroppedFrame):
            self.dropped.append((frame.utterance, frame.stage, frame.reason))
        await self.push_frame(frame, direction)


async def run_cascade_on_tracks(
    engines: Engines,
    tracks: list[SpeakerTrack],
    listeners: list[str],
    *,
    segmenter: SegmenterParams | None = None,
    realtime: bool = False,
    warn_slow: bool = True,
    progress: bool = True,
    **cascade_options: Any,
) -> FileTranslation:
    """Push the tracks through a fresh room's cascade and collect the results.

    Args:
        engines: Loaded engines.
        tracks: One per participant; all start at time zero.
        listeners: Languages to interpret into.
        segmenter: Segmentation parameters.
        realtime: Pace the audio like a live call (for latency measurements); otherwise
            push it as fast as the pipeline takes it.
        warn_slow: Warn when ASR runs slower than real time.
        progress: Log progress while feeding.
        **cascade_options: More keyword arguments for :func:`build_cascade` (voices).
    """
    room = Room(listeners, default_language=tracks[0].language if tracks else "en")
    for track in tracks:
        room.join(track.user_id, language=track.language)
    collector = UtteranceCollector()
    processors = build_cascade(
        engines,
        room,
        segmenter=segmenter,
        warn_slow=warn_slow,
        max_pending=None if not realtime else 8,
        **cascade_options,
    )
    worker = PipelineWorker(
        Pipeline([*processors, collector]),
        params=PipelineParams(enable_metrics=False),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    errors: list[str] = []
    started_event = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: Any, _frame: Frame) -> None:
        started_event.set()

    @worker.event_handler("on_pipeline_error")
    async def _error(_worker: Any, frame: ErrorFrame) -> None:
        errors.append(frame.error)

    frame_samples = 16000 * FRAME_MS // 1000
    total_frames = max((len(t.pcm) + frame_samples - 1) // frame_samples for t in tracks) if tracks else 0

    async def feed() -> None:
        await asyncio.wait_for(started_event.wait(), timeout=30)
        begin = time.monotonic()
        next_report = begin + 5.0
        for index in range(total_frames):
            for track in tracks:
                piece = track.pcm[index * frame_samples : (index + 1) * frame_samples]
                if len(piece):
                    await worker.queue_frame(
                        UserAudioRawFrame(
                            audio=piece.tobytes(), sample_rate=16000, num_channels=1, user_id=track.user_id
                        )
                    )
            if realtime:
                due = begin + (index + 1) * FRAME_MS / 1000
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            elif index % 50 == 49:
                await asyncio.sleep(0)  # let the cascade work while we feed
            if progress and time.monotonic() >= next_report:
                next_report += 5.0
                logger.info(f"fed {(index + 1) * FRAME_MS / 1000:.0f} s of {total_frames * FRAME_MS / 1000:.0f} s")
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    started = time.monotonic()
    await asyncio.gather(runner.run(), feed())
    utterances = sorted(collector.utterances.values(), key=lambda u: (u.end, u.id))
    audio = {
        uid: {lang: np.concatenate(parts) for lang, parts in per_lang.items()}
        for uid, per_lang in collector.chunks.items()
    }
    return FileTranslation(
        utterances=utterances,
        audio=audio,
        sample_rate=collector.sample_rate or engines.tts.sample_rate,
        dropped=collector.dropped,
        errors=errors,
        wall_seconds=time.monotonic() - started,
        input_seconds=total_frames * FRAME_MS / 1000,
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

    Returns:
        The captions document (also written to ``captions`` when given).
    """
    rate = out_rate or result.sample_rate
    gap = np.zeros(int(GAP_SECONDS * rate), dtype=np.int16)
    pieces: list[np.ndarray] = []
    cursor = 0
    entries = []
    for utterance in result.utterances:
        entry = utterance.summary()
        speech = result.audio.get(utterance.id, {}).get(target)
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
    document = {
        "inputs": inputs or [],
        "target_language": target,
        "output": str(out_wav),
        "sample_rate": rate,
        "utterances": entries,
        "dropped": [
            {"id": u.id, "user_id": u.user_id, "start": round(u.start, 3), "end": round(u.end, 3), "stage": stage, "reason": reason}
            for u, stage, reason in result.dropped
        ],
        "latency": result.latency().as_dict(),
        "wall_seconds": round(result.wall_seconds, 3),
        "input_seconds": round(result.input_seconds, 3),
    }
    if captions is not None:
        path = Path(captions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return document
