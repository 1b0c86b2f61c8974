"""Live interpretation policy: when to finalise, when to commit, what is stable.

Frame-free and pure: the streaming ASR stage (``pipeline.processors.streaming_asr``)
asks these functions, so the decisions can be tested on plain word lists.

* **Speculative endpointing.** At a pause the recogniser is finalised after
  ``speculate_after_ms`` of silence and the interpretation prepared while the hang-over
  runs; it is released once the silence has lasted :func:`hangover_ms` (short after a
  finished sentence, the full hang-over mid-clause), and thrown away if speech resumes.
* **Simultaneous mode.** While someone keeps talking, the words that several successive
  partial hypotheses agree on are *stable*; a stable prefix that ends at a clause
  boundary (a punctuation mark, or a pause between words) is committed and interpreted
  at once. When no boundary comes within ``commit_max_wait_s``, the stable prefix is
  committed anyway, so the ear-voice span stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.engines.base import Word

__all__ = ["StreamingParams", "clause_commit", "hangover_ms", "stable_prefix"]

#: Marks that end a clause or a sentence.
_CLAUSE_MARKS = ",;:、，；"
_SENTENCE_MARKS = ".?!…。？！"
#: Words after which a sentence is rarely over (English; other languages: punctuation only).
_CONTINUES = {
    "en": frozenset(
        "a an the and or but so because if that which who to of in on at for with from by as than "
        "my your his her our their its this these those is are was were be been i we you they he she "
        "it not no very more most".split()
    ),
}


@dataclass
class StreamingParams:
    """How live interpretation trades waiting against certainty (``interpretation:``).

    Attributes:
        mode: ``simultaneous`` (long speech is interpreted clause by clause while it goes
            on) or ``consecutive`` (each utterance once its speaker pauses).
        speculate: Finalise recognition at a pause and prepare the interpretation during
            the hang-over (thrown away if speech resumes).
        speculate_after_ms: Silence before a speculative finalisation.
        hangover_sentence_ms: Silence that ends an utterance whose text ends a sentence.
        hangover_ms: Silence that ends any other utterance (the VAD's ``min_silence_ms``
            is the longest wait: mid-clause, e.g. after "and", it applies).
        partial_interval_ms: Least time between two partial captions of one speaker.
        stable_partials: Successive partial hypotheses that must agree on a word before it
            is stable.
        commit_min_words: Fewest words committed as one segment in simultaneous mode.
        commit_gap_ms: A pause between two words this long is a clause boundary (for
            engines that write no punctuation).
        commit_max_wait_s: Longest a segment waits for a boundary before its stable words
            are committed anyway.
    """

    mode: str = "simultaneous"
    speculate: bool = True
    speculate_after_ms: int = 96
    hangover_sentence_ms: int = 250
    hangover_ms: int = 400
    partial_interval_ms: int = 300
    stable_partials: int = 2
    commit_min_words: int = 4
    commit_gap_ms: int = 150
    commit_max_wait_s: float = 2.5

    def __post_init__(self) -> None:
        if self.mode not in ("simultaneous", "consecutive"):
            raise ValueError(f"mode must be simultaneous or consecutive, not {self.mode!r}")
        for name in ("speculate_after_ms", "hangover_sentence_ms", "hangover_ms", "partial_interval_ms", "commit_gap_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.stable_partials < 1 or self.commit_min_words < 1:
            raise ValueError("stable_partials and commit_min_words must be at least 1")
        if self.commit_max_wait_s <= 0:
            raise ValueError("commit_max_wait_s must be positive")


def hangover_ms(
    text: str, language: str, params: StreamingParams, longest_ms: int, *, punctuated: bool = True
) -> int:
    """How much silence ends an utterance whose (speculative) transcript is ``text``.

    Short after a finished sentence (when the engine writes punctuation: otherwise a
    final mark says nothing), the full ``longest_ms`` when the last word says the clause
    goes on ("... and", "... the"), ``params.hangover_ms`` otherwise.
    """
    stripped = text.rstrip(" \"'”’»)")
    if punctuated and stripped and stripped[-1] in _SENTENCE_MARKS:
        return min(params.hangover_sentence_ms, longest_ms)
    words = stripped.lower().split()
    code = language.split("-")[0]
    if not words or stripped[-1:] in _CLAUSE_MARKS or words[-1].strip(",;:") in _CONTINUES.get(code, frozenset()):
        return longest_ms
    return min(params.hangover_ms, longest_ms)


def stable_prefix(history: Sequence[Sequence[str]]) -> int:
    """How many leading words every hypothesis in ``history`` agrees on."""
    if not history:
        return 0
    count = 0
    for words in zip(*history, strict=False):
        first = _plain(words[0])
        if any(_plain(w) != first for w in words[1:]):
            break
        count += 1
    return count


def clause_commit(
    words: Sequence[Word],
    stable: int,
    *,
    age_s: float,
    language: str,
    params: StreamingParams,
    final_words_pending: bool = True,
) -> int:
    """How many of ``words`` to commit now (0: none).

    Args:
        words: The latest partial hypothesis, with timings.
        stable: How many leading words are stable (:func:`stable_prefix`).
        age_s: How long the segment under way has been spoken.
        language: Its language (for punctuation rules).
        params: The thresholds.
        final_words_pending: Keep the last stable word back unless a boundary follows it
            (the speaker is still talking, so it may yet change or run on).
    """
    limit = min(stable, len(words))
    if limit < params.commit_min_words:
        return 0
    gap = params.commit_gap_ms / 1000
    best = 0
    for index in range(params.commit_min_words - 1, limit):
        word = words[index]
        nxt = words[index + 1] if index + 1 < len(words) else None
        punctuated = word.text.rstrip("\"'”’»)")[-1:] in _CLAUSE_MARKS + _SENTENCE_MARKS
        paused = nxt is not None and nxt.start - word.end >= gap
        if punctuated or paused:
            best = index + 1
    if best:
        return best
    if age_s >= params.commit_max_wait_s:
        keep_back = 1 if final_words_pending and limit == len(words) else 0
        count = limit - keep_back
        return count if count >= max(1, params.commit_min_words - 1) else 0
    return 0


def _plain(word: str) -> str:
    return word.strip(".,;:!?¿¡…\"'“”«»()").casefold()

