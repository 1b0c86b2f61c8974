"""Voice changer on recordings (``polyvox convert IN --voice NAME -o OUT.wav``).

The recording is played in as 20 ms ``UserAudioRawFrame`` through the same
:class:`~pipeline.processors.voice_changer.VoiceChangerProcessor` a live room runs (a
participant in voice mode), and every converted chunk is put back where it was said:
the output is as long as the input, pauses included.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import EndFrame, Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.engines.base import VoiceConversionEngine
from pipeline.file_mode import FRAME_MS, FileTransport
from pipeline.frames import VoiceChangedAudioFrame
from pipeline.processors.audio_input import AudioInputProcessor
from pipeline.processors.voice_changer import VoiceChangerProcessor
from pipeline.room import Room
from pipeline.voice_changer import ChangerVoice, VoiceChangerParams

__all__ = ["ConvertedChunk", "VoiceConversionResult", "describe", "run_voice_changer_on_file"]

_RATE = 16000


@dataclass
class ConvertedChunk:
    """One chunk as the live stage sent it: where it belongs in the input, and when it came."""

    offset: float
    audio: np.ndarray
    at: float


@dataclass
class VoiceConversionResult:
    """What the voice changer made of a recording.

    Attributes:
        audio: The converted recording, as long as the input (silence where nothing was
            said), at ``sample_rate``.
        sample_rate: The engine's output rate.
        chunks: Every converted chunk, in the order it came out.
        input_seconds: Length of the input.
        wall_seconds: How long the conversion took.
        latency_s: The engine's algorithmic latency.
    """

    audio: np.ndarray
    sample_rate: int
    chunks: list[ConvertedChunk] = field(default_factory=list)
    input_seconds: float = 0.0
    wall_seconds: float = 0.0
    latency_s: float = 0.0


class _Collector(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="voice-collector")
        self.chunks: list[ConvertedChunk] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VoiceChangedAudioFrame):
            self.chunks.append(ConvertedChunk(frame.offset, np.frombuffer(frame.audio, np.int16), time.monotonic()))
        await self.push_frame(frame, direction)


async def run_voice_changer_on_file(
    engine: VoiceConversionEngine,
    pcm: np.ndarray,
    voice: ChangerVoice,
    *,
    params: VoiceChangerParams | None = None,
    realtime: bool = False,
    user_id: str = "speaker",
) -> VoiceConversionResult:
    """Convert one recording (16 kHz mono int16) into ``voice``, through the live stage.

    Args:
        engine: A loaded voice-conversion engine.
        pcm: The recording.
        voice: The target (consent already checked: ``pipeline.voice_changer``).
        params: Stretch and flush settings.
        realtime: Feed at the pace of a live call (for latency measurements).
        user_id: The participant's id in the room.
    """
    room = Room([])
    room.mode = "voice"
    room.join(user_id).changer_voice = voice
    transport = FileTransport(name="convert")
    collector = _Collector()
    worker = PipelineWorker(
        Pipeline([
            transport.input(),
            AudioInputProcessor(room),
            VoiceChangerProcessor(engine, room, params),
            collector,
            transport.output(),
        ]),
        params=PipelineParams(enable_metrics=False),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    started = time.monotonic()
    task = asyncio.create_task(runner.run())
    await transport.input().ready.wait()
    step = _RATE * FRAME_MS // 1000
    begin = time.monotonic()
    for index, first in enumerate(range(0, len(pcm), step)):
        await transport.input().feed(user_id, pcm[first : first + step])
        if realtime:
            await asyncio.sleep(max(0.0, begin + (index + 1) * FRAME_MS / 1000 - time.monotonic()))
        elif index % 25 == 24:
            await asyncio.sleep(0)
    await worker.queue_frame(EndFrame())
    await task
    rate = engine.sample_rate
    out = np.zeros(round(len(pcm) / _RATE * rate), dtype=np.int16)
    for chunk in collector.chunks:
        first = round(chunk.offset * rate)
        piece = chunk.audio[: max(0, len(out) - first)]
        out[first : first + len(piece)] = piece
    return VoiceConversionResult(
        audio=out,
        sample_rate=rate,
        chunks=collector.chunks,
        input_seconds=len(pcm) / _RATE,
        wall_seconds=time.monotonic() - started,
        latency_s=getattr(engine, "latency_s", 0.0),
    )


def describe(result: VoiceConversionResult) -> dict[str, Any]:
    """A JSON-ready summary (the CLI prints it)."""
    converted = sum(len(c.audio) for c in result.chunks) / result.sample_rate
    return {
        "input_seconds": round(result.input_seconds, 3),
        "converted_seconds": round(converted, 3),
        "chunks": len(result.chunks),
        "latency_ms": round(result.latency_s * 1000),
        "real_time_factor": round(result.wall_seconds / max(result.input_seconds, 1e-9), 3),
    }
