"""ASR stage for engines that stream: recognition while people speak.

Fed by the VAD stage's ``SpeechActivityFrame`` steps (start, audio, pause, resume,
end), each participant's speech goes into their own ``ASRStream`` as it is spoken:

* **partial captions**: the transcript so far, at most every ``partial_interval_ms``,
  as ``CaptionFrame(final=False)`` of the utterance under way;
* **speculative endpointing**: ``speculate_after_ms`` into a pause the stream is
  finalised and the transcript sent on as a *speculative attempt*
  (``Utterance.attempt_at``): MT and TTS prepare its interpretation while the hang-over
  runs, the speculation gate holds it back, and it is released
  (``UtteranceCommittedFrame``) once the silence has lasted the adaptive hang-over
  (``pipeline.streaming.hangover_ms``), or thrown away (``SpeculationAbortedFrame``) when
  speech resumes first — nothing is played twice, nothing lost;
* **simultaneous mode**: while someone keeps talking, a stable clause
  (``pipeline.streaming.clause_commit``) is committed as an utterance of its own,
  interpreted at once, and cut from the stream; the committed segments of one stretch of
  speech concatenate to everything that was said.

Utterances get their ``speech_end`` at the end of the last voiced audio and their
``speech_start`` at the first word, so latency and ear-voice span count endpointing
time. If a stream breaks (a dead worker), that stretch of speech falls back to the whole
utterance ``transcribe`` and the next one opens a fresh stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame

from pipeline.engines.base import ASREngine, ASRStream, Transcript, Word
from pipeline.frames import (
    CaptionFrame,
    SpeculationAbortedFrame,
    SpeechActivityFrame,
    Utterance,
    UtteranceAudioFrame,
    UtteranceCommittedFrame,
    UtteranceDroppedFrame,
)
from pipeline.latency import SessionStats
from pipeline.processors.asr import ASRProcessor
from pipeline.room import Room
from pipeline.streaming import StreamingParams, clause_commit, hangover_ms, stable_prefix
from pipeline.text import restore_punctuation

__all__ = ["StreamingASRProcessor"]


@dataclass
class _Speaker:
    """One participant's recognition state."""

    stream: ASRStream | None = None
    language: str = ""
    #: Stream time = session time - offset (the stream hears only speech regions).
    offset: float = 0.0
    fed_s: float = 0.0
    position: float = 0.0
    wall: float = 0.0
    #: The utterance under way (partial captions use its id); None between utterances.
    live: Utterance | None = None
    #: Session time of the first word of ``live``, once known.
    live_first_word: float | None = None
    paused_at: float | None = None
    attempt: Utterance | None = None
    #: The attempt's transcript as the engine wrote it (its own punctuation, if any).
    attempt_transcript: Transcript | None = None
    #: The attempt was finalised and came out empty: nothing to speculate until new audio.
    attempt_empty: bool = False
    #: The utterance under way was committed during the pause: a resume starts a new one.
    committed_in_pause: bool = False
    last_partial_position: float = -1.0
    last_partial_text: str = ""
    history: list[list[str]] = field(default_factory=list)
    #: The stream broke in this stretch of speech: use the whole-utterance path.
    broken: bool = False
    #: This stretch of speech is recognised whole (its language is being identified).
    whole: bool = False


class StreamingASRProcessor(ASRProcessor):
    """Recognises each participant's speech as it is spoken (see the module docstring).

    Args:
        engine: A streaming ASR engine (``supports_streaming``).
        room: Each speaker's language.
        params: Live interpretation policy.
        longest_hangover_ms: The VAD's ``min_silence_ms``: mid-clause pauses wait this long.
        stats: Where speculation and caption counters go.
        warn_slow: Warn when the whole-utterance fallback runs slower than real time.
    """

    handles = (SpeechActivityFrame, UtteranceAudioFrame)

    def __init__(
        self,
        engine: ASREngine,
        room: Room,
        params: StreamingParams | None = None,
        *,
        longest_hangover_ms: int = 500,
        stats: SessionStats | None = None,
        warn_slow: bool = True,
        **kwargs: Any,
    ) -> None:
        # Speech steps must never be dropped (a lost step is lost words): no backlog limit.
        kwargs["max_pending"] = None
        super().__init__(engine, warn_slow=warn_slow, **kwargs)
        self._room = room
        self._params = params or StreamingParams()
        self._longest_ms = longest_hangover_ms
        self._stats = stats or SessionStats()
        self._speakers: dict[str, _Speaker] = {}

    @property
    def stats(self) -> SessionStats:
        return self._stats

    # -- ParticipantState ----------------------------------------------------------------

    def holds_participant(self, user_id: str) -> bool:
        return user_id in self._speakers or super().holds_participant(user_id)

    async def release_participant(self, user_id: str) -> None:
        await super().release_participant(user_id)
        speaker = self._speakers.pop(user_id, None)
        if speaker is not None and speaker.stream is not None:
            await asyncio.to_thread(speaker.stream.close)

    async def cleanup(self) -> None:
        for user in list(self._speakers):
            speaker = self._speakers.pop(user)
            if speaker.stream is not None:
                await asyncio.to_thread(speaker.stream.close)
        await super().cleanup()

    # -- the lane --------------------------------------------------------------------------

    async def handle_many(self, frames: list[Frame]) -> None:
        user = self.lane_key(frames[0])
        speaker = self._speakers.setdefault(user, _Speaker())
        audio: list[SpeechActivityFrame] = []
        for frame in frames:
            if isinstance(frame, SpeechActivityFrame) and frame.kind == "audio":
                audio.append(frame)
                continue
            if audio:
                await self._guard(speaker, self._on_audio(user, speaker, audio))
                audio = []
            if isinstance(frame, UtteranceAudioFrame):
                await self.push_frame(frame)  # voice capture wants it
                if speaker.broken or frame.interpreted:
                    # The stream broke, or this speech was never streamed (its language
                    # was being identified): recognise it whole.
                    await self._guarded(self.recognise_whole, frame)
            else:
                assert isinstance(frame, SpeechActivityFrame)
                await self._guard(speaker, self._on_step(user, speaker, frame))
        if audio:
            await self._guard(speaker, self._on_audio(user, speaker, audio))

    async def _guard(self, speaker: _Speaker, work: Any) -> None:
        """Run one step; a failing stream is dropped and this stretch of speech falls back
        to the whole-utterance path."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one participant's stream must not stop the room
            await self._report(f"asr stream failed: {exc}", exc, None)
            speaker.broken = True
            if speaker.attempt is not None:
                await self.push_frame(SpeculationAbortedFrame(speaker.attempt))
                speaker.attempt = None
            speaker.live = None
            stream, speaker.stream = speaker.stream, None
            if stream is not None:
                await asyncio.to_thread(stream.close)

    # -- steps -------------------------------------------------------------------------------

    async def _on_step(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        speaker.position, speaker.wall = frame.position, frame.wall
        if frame.kind == "start":
            speaker.broken = False
            speaker.whole = frame.whole
            if frame.whole:
                return  # recognised whole from its UtteranceAudioFrame
            await self._open(user, speaker)
            if speaker.stream is None:
                return
            pcm = np.frombuffer(frame.audio, dtype=np.int16)
            # This stretch of speech begins where its audio does: map session time to
            # stream time so word timings line up.
            speaker.offset = (frame.position - len(pcm) / self._engine.sample_rate) - speaker.fed_s
            self._new_live(user, speaker, frame.at)
            await self._feed(speaker, pcm)
        elif speaker.broken or speaker.whole or speaker.stream is None:
            if frame.kind in ("end",):
                speaker.paused_at, speaker.live, speaker.attempt = None, None, None
            return
        elif frame.kind == "pause":
            speaker.paused_at = frame.at
            speaker.attempt_empty = False
        elif frame.kind == "resume":
            await self._resume(user, speaker, frame)
        elif frame.kind == "end":
            await self._end(user, speaker, frame)
        elif frame.kind == "split" and self._params.mode == "consecutive":
            # The VAD's safety net for endless speech: commit what was said so far.
            await self._finish_live(user, speaker, frame, end=frame.at, split=True)

    async def _on_audio(self, user: str, speaker: _Speaker, frames: list[SpeechActivityFrame]) -> None:
        if speaker.stream is None or speaker.broken or speaker.whole:
            return
        speaker.position, speaker.wall = frames[-1].position, frames[-1].wall
        pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
        await self._feed(speaker, pcm)
        if speaker.paused_at is not None:
            await self._in_pause(user, speaker, frames[-1])
        else:
            await self._speaking(user, speaker, frames[-1])

    async def _in_pause(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        assert speaker.paused_at is not None
        silence_ms = (frame.position - speaker.paused_at) * 1000
        if speaker.live is None:
            return
        if (
            self._params.speculate
            and speaker.attempt is None
            and not speaker.attempt_empty
            and silence_ms >= self._params.speculate_after_ms
        ):
            await self._speculate(user, speaker, frame)
        if speaker.attempt is not None and speaker.attempt_transcript is not None:
            transcript = speaker.attempt_transcript
            wait = hangover_ms(
                transcript.text, speaker.attempt.language, self._params, self._longest_ms, punctuated=transcript.punctuated
            )
            if silence_ms >= wait:
                await self._commit_attempt(speaker, in_pause=True)

    async def _speaking(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        if speaker.live is None:
            return
        due = self._params.partial_interval_ms / 1000
        if frame.position - speaker.last_partial_position < due:
            return
        if time.monotonic() - frame.wall > max(due, 0.3):
            # Behind real time (a busy machine): catching up with the speech comes first;
            # partial captions resume when the recogniser is live again.
            self._stats.partials_skipped += 1
            return
        speaker.last_partial_position = frame.position
        transcript = await self._stream_call(speaker, speaker.stream.partial)  # type: ignore[union-attr]
        await self._partial_caption(speaker, transcript, frame)
        if self._params.mode == "simultaneous":
            await self._maybe_commit_clause(user, speaker, transcript, frame)

    async def _resume(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        speaker.paused_at = None
        speaker.attempt_empty = False
        if speaker.attempt is not None:
            # The speaker went on: the prepared interpretation is void.
            self._stats.speculations_wasted += 1
            await self.push_frame(SpeculationAbortedFrame(speaker.attempt))
            logger.debug(f"speculation {speaker.attempt.id}.{speaker.attempt.attempt} of {user} discarded: speech resumed")
            speaker.attempt = None
        if speaker.live is None and speaker.committed_in_pause:
            speaker.committed_in_pause = False
            self._new_live(user, speaker, frame.at)

    async def _end(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        if speaker.attempt is not None:
            await self._commit_attempt(speaker, in_pause=False)
        elif speaker.live is not None:
            end = speaker.paused_at if speaker.paused_at is not None else frame.at
            await self._finish_live(user, speaker, frame, end=end, split=False)
        # The stretch of speech is over: the stream forgets it.
        if speaker.stream is not None:
            await self._stream_call(speaker, speaker.stream.cut, speaker.fed_s)
        speaker.live = None
        speaker.paused_at = None
        speaker.committed_in_pause = False
        speaker.history.clear()

    # -- decisions ---------------------------------------------------------------------------

    async def _speculate(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame) -> None:
        assert speaker.live is not None and speaker.paused_at is not None and speaker.stream is not None
        started = time.monotonic()
        transcript = await self._stream_call(speaker, speaker.stream.finalize)
        text = self.clean(transcript, speaker.language)
        if not text:
            speaker.attempt_empty = True
            return
        attempt = speaker.live.attempt_at(end=speaker.paused_at)
        attempt.add_compute("asr", time.monotonic() - started)
        self._stamp(speaker, attempt, transcript, frame, end=speaker.paused_at)
        speaker.attempt, speaker.attempt_transcript = attempt, transcript
        self._stats.speculations += 1
        # Readers see the final words at once (as the live caption); the interpretation
        # waits for the hang-over behind the speculation gate.
        await self.push_frame(CaptionFrame(speaker.live, text))
        await self.send_transcript(attempt, text, caption=False)

    async def _commit_attempt(self, speaker: _Speaker, *, in_pause: bool) -> None:
        attempt = speaker.attempt
        assert attempt is not None
        await self.push_frame(UtteranceCommittedFrame(attempt))
        self._stats.speculations_committed += 1
        if speaker.stream is not None:
            await self._stream_call(speaker, speaker.stream.cut, speaker.fed_s)
        speaker.attempt = None
        speaker.live = None
        speaker.live_first_word = None
        speaker.history.clear()
        speaker.committed_in_pause = in_pause

    async def _finish_live(self, user: str, speaker: _Speaker, frame: SpeechActivityFrame, *, end: float, split: bool) -> None:
        """Finalise and send the utterance under way (no speculation happened)."""
        assert speaker.live is not None and speaker.stream is not None
        started = time.monotonic()
        transcript = await self._stream_call(speaker, speaker.stream.finalize)
        live = speaker.live
        live.add_compute("asr", time.monotonic() - started)
        text = self.clean(transcript, speaker.language)
        live.end = max(end, live.start)
        live.split = split
        self._stamp(speaker, live, transcript, frame, end=end)
        if split:
            await self._stream_call(speaker, speaker.stream.cut, speaker.fed_s)
            self._new_live(user, speaker, end)
        else:
            speaker.live = None
        if not text:
            await self.push_frame(UtteranceDroppedFrame(live, "asr", "no words recognised"))
            return
        await self.send_transcript(live, text)

    async def _maybe_commit_clause(
        self, user: str, speaker: _Speaker, transcript: Transcript, frame: SpeechActivityFrame
    ) -> None:
        words = transcript.words
        if not words or speaker.live is None or speaker.stream is None:
            return
        speaker.history.append([w.text for w in words])
        del speaker.history[: -self._params.stable_partials]
        if len(speaker.history) < self._params.stable_partials:
            return
        stable = stable_prefix(speaker.history)
        first = speaker.live_first_word if speaker.live_first_word is not None else words[0].start + speaker.offset
        count = clause_commit(
            words, stable, age_s=frame.position - first, language=speaker.language, params=self._params
        )
        if not count:
            return
        committed = words[:count]
        live = speaker.live
        text = " ".join(w.text for w in committed)
        if not transcript.punctuated:
            text = restore_punctuation(text, speaker.language)
        end = committed[-1].end + speaker.offset
        live.end = end
        live.split = True
        self._stamp(speaker, live, Transcript(text, speaker.language, words=list(committed)), frame, end=end)
        cut_at = committed[-1].end if count == len(words) else (committed[-1].end + words[count].start) / 2
        await self._stream_call(speaker, speaker.stream.cut, cut_at)
        self._stats.clause_commits += 1
        logger.debug(f"[{user}] committed a clause of {count} words while they speak")
        rest_start = words[count].start + speaker.offset if count < len(words) else end
        self._new_live(user, speaker, rest_start)
        speaker.history = [[w.text for w in words[count:]]] if count < len(words) else []
        await self.send_transcript(live, text)

    # -- helpers -----------------------------------------------------------------------------

    async def _stream_call(self, speaker: _Speaker, fn: Any, *args: Any) -> Any:
        """A call into a speaker's stream, with a deadline for the audio it holds."""
        held = speaker.position - (speaker.live.start if speaker.live is not None else speaker.position)
        return await self.engine_call(fn, *args, timeout_s=self.timeouts.for_audio(held + 1.0))

    async def _open(self, user: str, speaker: _Speaker) -> None:
        language = self._room.language_of(user)
        if speaker.stream is not None and speaker.language == language:
            return
        if speaker.stream is not None:
            await asyncio.to_thread(speaker.stream.close)
        speaker.stream = await self.engine_call(self._engine.open_stream, language, timeout_s=self.timeouts.base_s)
        speaker.language = language
        speaker.fed_s = 0.0

    async def _feed(self, speaker: _Speaker, pcm: np.ndarray) -> None:
        if not len(pcm) or speaker.stream is None:
            return
        await self.engine_call(speaker.stream.feed, pcm, timeout_s=self.timeouts.for_audio(len(pcm) / self._engine.sample_rate))
        speaker.fed_s += len(pcm) / self._engine.sample_rate

    def _new_live(self, user: str, speaker: _Speaker, start: float) -> None:
        speaker.live = Utterance(user_id=user, language=speaker.language, start=start, end=start)
        speaker.live_first_word = None
        speaker.last_partial_text = ""
        speaker.attempt_empty = False

    async def _partial_caption(self, speaker: _Speaker, transcript: Transcript, frame: SpeechActivityFrame) -> None:
        text = transcript.text.strip()
        if speaker.live is None or not text or text == speaker.last_partial_text:
            return
        if speaker.live_first_word is None and transcript.words:
            speaker.live_first_word = transcript.words[0].start + speaker.offset
        known = len(speaker.last_partial_text.split())
        now = time.monotonic()
        # Caption delay: from when each new word was spoken to now, when it is shown.
        for word in transcript.words[known:]:
            self._stats.caption_delay(max(0.0, now - frame.spoken_at(word.end + speaker.offset)))
        speaker.last_partial_text = text
        self._stats.partial_captions += 1
        await self.push_frame(CaptionFrame(speaker.live, text))

    def _stamp(
        self, speaker: _Speaker, utterance: Utterance, transcript: Transcript, frame: SpeechActivityFrame, *, end: float
    ) -> None:
        """Speech start/end and ASR marks of an utterance about to be sent."""
        words: list[Word] = transcript.words
        first = words[0].start + speaker.offset if words else speaker.live_first_word
        if first is not None:
            utterance.mark("speech_start", frame.spoken_at(first))
        utterance.mark("speech_end", frame.spoken_at(end))
        utterance.mark("asr_done")
