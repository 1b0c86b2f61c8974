"""Live interpretation with a streaming recogniser (fake tone-word engine): partial
captions, speculative endpointing, simultaneous mode, the speculation gate."""

from __future__ import annotations

import numpy as np
from pipecat.tests.utils import run_test

from pipeline.engines.base import Word
from pipeline.file_mode import SpeakerTrack, run_cascade_on_tracks
from pipeline.frames import (
    CaptionFrame,
    InterpretationDoneFrame,
    SpeculationAbortedFrame,
    Utterance,
    UtteranceCommittedFrame,
    UtteranceTranscriptionFrame,
)
from pipeline.processors.speculation import SpeculationGateProcessor
from pipeline.segmenter import SegmenterParams, UtteranceSegmenter
from pipeline.session import InterpretationParams
from pipeline.streaming import StreamingParams, clause_commit, hangover_ms, stable_prefix
from tests.fakes import (
    EnergyVADStream,
    ToneWordsASREngine,
    fake_engines,
    silence,
    tone,
)

SEGMENTER = SegmenterParams(min_silence_ms=500, preroll_ms=0, postroll_ms=0)


def params(**streaming) -> InterpretationParams:
    return InterpretationParams(segmenter=SEGMENTER, streaming=StreamingParams(**streaming), max_pending=None)


def words_of(result) -> list[str]:
    return [w.strip(".").lower() for w in result.transcript.split()]


# -- the segmenter reports steps ---------------------------------------------------------


def test_the_segmenter_reports_start_pause_resume_and_end_with_every_sample():
    seg = UtteranceSegmenter(EnergyVADStream(), SegmenterParams(min_silence_ms=300, preroll_ms=64, postroll_ms=0))
    pcm = np.concatenate([silence(0.2), tone(440, 0.4), silence(0.15), tone(550, 0.4), silence(0.5)])
    events = []
    for i in range(0, len(pcm), 320):
        events += seg.push_events(pcm[i : i + 320])
    kinds = [e.kind for e in events if e.kind != "audio"]
    assert kinds == ["start", "pause", "resume", "pause", "end"]
    start, first_pause, resume, second_pause, end = (e for e in events if e.kind != "audio")
    assert abs(start.at - 0.2) < 0.04 and abs(first_pause.at - 0.6) < 0.04
    assert abs(resume.at - 0.75) < 0.04 and abs(second_pause.at - 1.15) < 0.04
    assert end.segment is not None and abs(end.segment.end - second_pause.at) < 1e-9
    # The audio reported between start and end is the utterance's, preroll included.
    fed = np.concatenate([e.audio for e in events if e.audio is not None])
    begin = int(round((start.at - 0.064) * 16000))
    assert np.array_equal(fed, pcm[begin : begin + len(fed)])
    assert len(fed) / 16000 > 1.1  # through the hang-over


# -- policy --------------------------------------------------------------------------------


def test_hangover_is_short_after_a_sentence_and_long_mid_clause():
    p = StreamingParams(hangover_sentence_ms=250, hangover_ms=400)
    assert hangover_ms("I am here.", "en", p, 600) == 250
    assert hangover_ms("I am here.", "en", p, 600, punctuated=False) == 400  # a "." we added says nothing
    assert hangover_ms("I went there and", "en", p, 600) == 600
    assert hangover_ms("I went there,", "en", p, 600) == 600
    assert hangover_ms("I went there", "en", p, 600) == 400


def test_stable_words_and_clause_commits():
    assert stable_prefix([["a", "b", "c"], ["a", "b", "d", "e"]]) == 2
    assert stable_prefix([["A,", "b"], ["a", "b"]]) == 2  # punctuation and case do not count
    p = StreamingParams(commit_min_words=2, commit_gap_ms=150, commit_max_wait_s=2.0)
    words = [Word("one", 0.0, 0.3), Word("two", 0.35, 0.6), Word("three", 0.9, 1.2), Word("four", 1.25, 1.5)]
    # A 300 ms pause after "two" is a boundary: commit two words.
    assert clause_commit(words, 4, age_s=1.5, language="en", params=p) == 2
    # Nothing stable past "one": nothing to commit yet.
    assert clause_commit(words, 1, age_s=1.5, language="en", params=p) == 0
    # No boundary, but waited too long: the stable words go, but the last one stays back.
    flat = [Word(w.text, i * 0.4, i * 0.4 + 0.38) for i, w in enumerate(words)]
    assert clause_commit(flat, 4, age_s=1.0, language="en", params=p) == 0
    assert clause_commit(flat, 4, age_s=2.5, language="en", params=p) == 3
    punctuated = [Word("one", 0, 0.3), Word("two,", 0.31, 0.6), Word("three", 0.61, 0.9)]
    assert clause_commit(punctuated, 3, age_s=0.9, language="en", params=p) == 2


# -- the gate ------------------------------------------------------------------------------


async def test_the_gate_holds_speculation_until_committed_and_drops_aborted_ones():
    live = Utterance("alice", "en", 0.0, 1.0)
    kept, void = live.attempt_at(1.0), live.attempt_at(1.2)
    plain = Utterance("bob", "en", 0.0, 1.0)

    def text(u: Utterance, t: str) -> UtteranceTranscriptionFrame:
        return UtteranceTranscriptionFrame(text=t, user_id=u.user_id, timestamp="", utterance=u)

    frames = [
        text(void, "void"), text(kept, "kept"), text(plain, "plain"),
        SpeculationAbortedFrame(void), UtteranceCommittedFrame(kept),
        InterpretationDoneFrame(kept, "es"), InterpretationDoneFrame(void, "es"),
    ]
    down, _ = await run_test(SpeculationGateProcessor(), frames_to_send=frames)
    seen = [(type(f).__name__, f.utterance.attempt) for f in down]
    # Decisions are system frames (they may overtake the attempt's frames): whatever the
    # order, the committed attempt's frames pass in their order, the void one's never.
    assert ("UtteranceTranscriptionFrame", 0) in seen  # bob's is not speculative
    assert [k for k in seen if k[1] == kept.attempt] == [
        ("UtteranceTranscriptionFrame", kept.attempt), ("InterpretationDoneFrame", kept.attempt),
    ]
    assert not [k for k in seen if k[1] == void.attempt]
    assert "released" in kept.marks and "released" not in void.marks


# -- the whole cascade ---------------------------------------------------------------------


async def test_a_pause_is_interpreted_speculatively_and_released_by_the_hangover():
    engines = fake_engines(asr=ToneWordsASREngine())
    track = SpeakerTrack("alice", np.concatenate([silence(0.2), tone(440, 0.5), silence(0.02), tone(550, 0.5), silence(1.0)]), "en")
    result = await run_cascade_on_tracks(engines, [track], ["es"], params=params(mode="consecutive"), realtime=True)
    (only,) = result.utterances
    assert words_of(only) == ["w440", "w550"]
    assert only.translations == {"es": "[es] W440 w550."}
    u = only.utterance
    assert u.speculative and "released" in u.marks
    # Recognition and translation were done during the hang-over: the audio existed
    # before the hang-over ended, and was released when it did.
    assert u.marks["first_tts_audio"] < u.marks["released"]
    latency = u.latencies()["end_to_first_audio"]
    assert 0.3 < latency < 0.5 + 0.25  # the 400 ms hang-over, not 500 ms + recognition
    partial = [c for c in result.captions if not c["final"]]
    assert partial and partial[0]["at"] < 0.2 + 1.0  # a caption while she was still talking


async def test_speculation_is_discarded_when_speech_resumes_and_nothing_is_spoken_twice():
    engines = fake_engines(asr=ToneWordsASREngine())
    # A 250 ms pause: long enough to speculate (96 ms), shorter than the hang-over (400).
    pcm = np.concatenate([silence(0.2), tone(440, 0.5), silence(0.25), tone(550, 0.5), silence(1.0)])
    result = await run_cascade_on_tracks(
        engines, [SpeakerTrack("alice", pcm, "en")], ["es"], params=params(mode="consecutive")
    )
    (only,) = result.utterances
    assert words_of(only) == ["w440", "w550"]
    stats = result.stats
    assert (stats.speculations, stats.speculations_wasted, stats.speculations_committed) == (2, 1, 1)
    # One interpretation, with the beeps of its two words: the discarded one never played.
    assert list(result.audio) == [only.id]
    assert len(result.audio[only.id]["es"]) == 3 * 2400  # "[es] W440 w550." is three words


async def test_a_monologue_is_interpreted_clause_by_clause_while_it_goes_on():
    engines = fake_engines(asr=ToneWordsASREngine())
    freqs = [300 + 40 * i for i in range(14)]
    pieces = [silence(0.3)]
    for index, freq in enumerate(freqs):
        pieces += [tone(freq, 0.4), silence(0.06 if index % 4 != 3 else 0.18)]  # a clause every 4 words
    pieces.append(silence(1.0))
    pcm = np.concatenate(pieces)
    result = await run_cascade_on_tracks(
        engines, [SpeakerTrack("alice", pcm, "en")], ["es"], params=params(mode="simultaneous"), realtime=True
    )
    segments = result.utterances
    said = [w for r in segments for w in words_of(r)]
    assert said == [f"w{f}" for f in freqs]  # every word once, in order
    assert len(segments) >= 3 and all(r.utterance.split for r in segments[:-1])
    first_audio = min(r.utterance.marks["first_audio_out"] for r in segments)
    input_end = result.started_at + len(pcm) / 16000 - 1.0  # when the speech itself ended
    assert first_audio < input_end - 2.0  # heard long before the monologue was over
    spans = [r.utterance.latencies()["ear_voice_span"] for r in segments]
    assert all(0 < s < 4.0 for s in spans)


async def test_one_slow_stream_does_not_hold_up_another_speaker():
    slow = ToneWordsASREngine(delay=0.0)
    engines = fake_engines(asr=slow)
    alice = SpeakerTrack("alice", np.concatenate([silence(0.2), tone(440, 0.6), silence(1.0)]), "en")
    bob = SpeakerTrack("bob", np.concatenate([silence(0.2), tone(660, 0.6), silence(1.0)]), "en")
    original = slow.transcribe

    def slow_for_alice(pcm, rate, language):
        transcript = original(pcm, rate, language)
        if "w440" in transcript.text:
            import time

            time.sleep(0.4)
        return transcript

    slow.transcribe = slow_for_alice  # type: ignore[method-assign]
    result = await run_cascade_on_tracks(engines, [alice, bob], ["es"], params=params(mode="consecutive"), realtime=True)
    by_user = {r.user_id: r.utterance for r in result.utterances}
    assert by_user["bob"].marks["first_audio_out"] < by_user["alice"].marks["first_audio_out"]
    assert by_user["bob"].latencies()["end_to_first_audio"] < 0.8


async def test_captions_partial_then_final_for_one_utterance_id():
    engines = fake_engines(asr=ToneWordsASREngine())
    pcm = np.concatenate(
        [silence(0.2), tone(440, 0.5), silence(0.02), tone(550, 0.5), silence(0.02), tone(660, 0.5), silence(1.0)]
    )
    result = await run_cascade_on_tracks(
        engines, [SpeakerTrack("alice", pcm, "en")], ["es"], params=params(mode="consecutive"), realtime=True
    )
    (only,) = result.utterances
    mine = [c for c in result.captions if c["utterance_id"] == only.id]
    assert [c["final"] for c in mine][-1] is True and not any(c["final"] for c in mine[:-1])
    texts = [c["text"] for c in mine if not c["final"]]
    assert len(texts) >= 2 and texts[0] != texts[-1]  # it grew while she spoke
    assert mine[-1]["translations"] == {"es": "[es] W440 w550 w660."}
    assert all(isinstance(c, dict) for c in result.captions) and not any(
        isinstance(c, CaptionFrame) for c in result.captions
    )


async def test_a_language_being_identified_is_recognised_whole_then_streamed():
    from pipeline.languages import AUTO

    class IdentifyingToneWords(ToneWordsASREngine):
        detects_language = True

        def detect_language(self, pcm, sample_rate):  # type: ignore[no-untyped-def]
            return [("es", 0.95), ("en", 0.05)]

    engine = IdentifyingToneWords()
    # Over a second each: shorter utterances never settle a language.
    pcm = np.concatenate([silence(0.2), tone(440, 1.2), silence(0.8), tone(550, 1.2), silence(0.8)])
    result = await run_cascade_on_tracks(
        fake_engines(asr=engine), [SpeakerTrack("alice", pcm, AUTO)], ["en"], params=params(mode="consecutive"),
        realtime=True,
    )
    first, second = result.utterances
    assert first.utterance.language == "es" and not first.utterance.speculative  # identified, then whole
    assert second.utterance.language == "es" and second.utterance.speculative  # then streamed, speculatively
    assert first.translations == {"en": "[en] W440."} and second.translations == {"en": "[en] W550."}
    assert engine.streams == 1
