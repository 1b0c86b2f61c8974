"""Text utilities shared by the engines and processors: punctuation, sentences, WER.

Everything here is a pure function on strings; nothing knows about frames or models.

* :func:`restore_punctuation` gives bare ASR output (``"how are you today"``) sentence
  casing and a final mark (``"How are you today?"``) so that MT and TTS see a sentence.
* :func:`split_sentences` cuts text into sentences for TTS to speak one at a time.
* :func:`add_opening_marks` adds the opening ``¿``/``¡`` a language's rules call for
  (what :func:`pipeline.languages.finish_translation` does to Spanish MT output).
* :func:`normalize_for_wer` puts transcripts and references in one form for comparison.

What differs between languages (question words, marks, abbreviations) is data in
:mod:`pipeline.languages`; this module holds only the algorithms.
"""

from __future__ import annotations

import re
import unicodedata

from pipeline import languages
from pipeline.languages import PunctuationRules

__all__ = [
    "add_opening_marks",
    "normalize_for_wer",
    "restore_punctuation",
    "split_sentences",
]

#: Characters whose presence means the text was punctuated by its producer.
_PUNCTUATION = frozenset(',;:"“”«»()') | languages.punctuation_marks()

# --- Sentence splitting ----------------------------------------------------------------

#: Tokens ending in "." that do not end a sentence (compared lowercased, without the dot).
_ABBREVIATIONS = languages.abbreviations()
_MAX_SENTENCE = 300
_CLOSERS = "\"'”’»)\\]"
_OPENERS = languages.opening_marks()
_SPACED_ENDS = re.escape(languages.SENTENCE_END_MARKS + languages.UNSPACED_SENTENCE_END_MARKS)
_UNSPACED_ENDS = re.escape(languages.UNSPACED_SENTENCE_END_MARKS)
# A run of end marks, then closing quotes/brackets, then whitespace, an opener ("¿"), or
# the end; or a run of full-width CJK marks, which need no space after them.
_SENTENCE_END = re.compile(
    rf"[{_SPACED_ENDS}]+[{_CLOSERS}]*(?=\s|[{re.escape(_OPENERS)}]|$)"
    + (rf"|[{_UNSPACED_ENDS}]+[{_CLOSERS}]*" if _UNSPACED_ENDS else "")
)
_PARAGRAPH = re.compile(r"\n\s*\n")


def restore_punctuation(text: str, language: str) -> str:
    """Give bare ASR output sentence casing and a final punctuation mark.

    Text that already has an uppercase letter or a punctuation mark is taken to be
    punctuated by its producer and only trimmed. Otherwise the text is treated as one
    sentence: whitespace is collapsed, the first letter is capitalised and a final mark
    is added.

    Everything language-specific comes from the language's
    :class:`~pipeline.languages.PunctuationRules`: the question test (deliberately
    conservative, because a wrong "?" changes the intonation TTS gives a statement while
    a missing one only flattens a question), how a question is wrapped, the full stop,
    word fixes and casing:

    * English: questions such as "how are you today", "do you like it", "it's cold
      isn't it" get "?", while "when i was young ...", "do it now", "had he married ..."
      stay statements; "i", "i'm", ... become "I", "I'm", ...; "mr", "mrs", "ms", "dr"
      become "Mr.", ....
    * Spanish: a question starts with an accented interrogative ("qué", "dónde",
      "cuándo", "por qué", "quién", "cómo", "cuál", "cuánto", ...) and is wrapped in
      "¿...?". The unaccented forms are conjunctions and do not count.
    * Other languages: casing where the script has it and the language's full stop
      ("." ; "。" in Chinese and Japanese, "।" in Hindi); no question is guessed.
    * Unknown language codes get the plain rules: casing and ".".

    Args:
        text: One utterance, as the ASR engine produced it.
        language: ISO 639-1 code of the text.

    Returns:
        The sentence, or "" when ``text`` is empty or only whitespace.
    """
    stripped = text.strip()
    if not stripped:
        return ""
    if any(char.isupper() or char in _PUNCTUATION for char in stripped):
        return stripped

    rules = languages.punctuation_rules(language)
    words = stripped.split()
    question = rules.is_question(words)
    sentence = rules.capitalize(" ".join(rules.fix_words(words)))
    if question:
        opener, closer = rules.question_wrap
        return f"{opener}{sentence}{closer}"
    # The input had no punctuation, so a final "." can only be an abbreviation's ("Mr.").
    if not rules.full_stop or sentence.endswith(rules.full_stop):
        return sentence
    return f"{sentence}{rules.full_stop}"


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, each keeping its own punctuation.

    A sentence ends at a run of end marks (``. ! ? …`` and the other languages' marks
    in :data:`pipeline.languages.SENTENCE_END_MARKS`, such as ``।`` and ``؟``) followed by
    optional closing quotes or brackets and then whitespace, an opening ``¿``/``¡``, or
    the end of the text; the full-width CJK ``。！？`` end one even with no space after
    them; a blank line also ends one. A period does not end a sentence after a known
    abbreviation of any language ("Mr.", "Dr.", "e.g.", "etc.", "Sra.") or a single capital initial
    ("J. R. R. Tolkien"), nor inside a number ("3.5"), since no space follows it there.
    The Spanish openers "¿" and "¡" stay with the sentence they open. A sentence longer
    than 300 characters is cut further at commas and semicolons (and at spaces if a
    clause alone is still too long), so TTS never waits on one huge chunk.

    Args:
        text: Any text.

    Returns:
        The sentences, stripped, without empty ones; ``[]`` for blank text.
    """
    sentences: list[str] = []
    for start, end in _sentence_spans(text):
        sentence = text[start:end].strip()
        if not sentence:
            continue
        if len(sentence) > _MAX_SENTENCE:
            sentences.extend(_split_long(sentence))
        else:
            sentences.append(sentence)
    return sentences


def add_opening_marks(text: str, rules: PunctuationRules) -> str:
    """Add the opening marks a language's rules call for ("¿", "¡") where they are missing.

    The rule is simple, because machine translation output gives little to go on: in
    each sentence (as :func:`split_sentences` sees them) that ends in "?" or "!" and has
    no opener of that kind, the opener goes before the last comma-separated clause that
    the language's question test accepts ("Hola, cómo eres hoy?" → "Hola, ¿cómo eres
    hoy?"), and otherwise at the start of the sentence, after any opening quotes
    ("Vienes mañana?" → "¿Vienes mañana?"). Everything else is left as it is; rules
    without openers leave the text unchanged. Use
    :func:`pipeline.languages.finish_translation` to apply a language's rules by code.

    Args:
        text: Text in the language of ``rules``, typically machine translation output.
        rules: That language's punctuation rules.

    Returns:
        The text with openers added.
    """
    if not (rules.question_open or rules.exclamation_open):
        return text
    pieces: list[str] = []
    position = 0
    for start, end in _sentence_spans(text):
        pieces.append(text[position:start])
        pieces.append(_open_sentence(text[start:end], rules))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def normalize_for_wer(text: str) -> str:
    """Put a transcript in the form word error rates are computed on.

    Lowercases, expands "mr", "mrs" and "dr" (with or without the period) to "mister",
    "missus" and "doctor", removes punctuation (keeping apostrophes inside words, so
    "i'm" stays one word; hyphens separate words) and collapses whitespace.

    Args:
        text: A transcript or reference.

    Returns:
        The normalised text; "" when nothing but punctuation and spaces remains.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"\bmrs\b\.?", "missus", text)
    text = re.sub(r"\bmr\b\.?", "mister", text)
    text = re.sub(r"\bdr\b\.?", "doctor", text)
    text = "".join(
        char if char == "'" or not unicodedata.category(char).startswith(("P", "S")) else " "
        for char in text
    )
    words = (word.strip("'") for word in text.split())
    return " ".join(word for word in words if word)


# --- helpers ---------------------------------------------------------------------------


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in ``text``; the text between spans is whitespace."""
    spans: list[tuple[int, int]] = []
    start = 0
    breaks = sorted(
        [(match.end(), True) for match in _SENTENCE_END.finditer(text)]
        + [(match.start(), False) for match in _PARAGRAPH.finditer(text)]
    )
    for position, after_mark in breaks:
        if position <= start:
            continue
        if after_mark and (
            _ends_in_abbreviation(text, start, position) or _continues_after_quote(text, position)
        ):
            continue
        spans.append((start, position))
        start = position
    if start < len(text):
        spans.append((start, len(text)))
    # Trim each span to its non-blank part, so the gaps between spans are pure whitespace.
    trimmed = []
    for span_start, span_end in spans:
        chunk = text[span_start:span_end]
        if chunk.strip():
            left = span_start + len(chunk) - len(chunk.lstrip())
            right = span_end - (len(chunk) - len(chunk.rstrip()))
            trimmed.append((left, right))
    return trimmed


def _ends_in_abbreviation(text: str, start: int, end: int) -> bool:
    """Whether the mark ending at ``end`` is the period of an abbreviation or initial."""
    chunk = text[start:end].rstrip("\"'”’»)]")
    if not chunk.endswith(".") or chunk.endswith(".."):
        return False
    token = chunk[:-1].split()[-1] if chunk[:-1].split() else ""
    token = token.lstrip("\"'“‘«([¿¡")
    if token.lower() in _ABBREVIATIONS:
        return True
    # A single capital letter is an initial: "J. R. R. Tolkien".
    return len(token) == 1 and token.isupper()


def _continues_after_quote(text: str, end: int) -> bool:
    """Whether a quoted "?"/"!" ending at ``end`` runs on into its sentence ("Why?" he said)."""
    if text[end - 1 : end] not in {'"', "'", "”", "’", "»"}:
        return False
    rest = text[end:].lstrip()
    return bool(rest) and rest[0].islower()


def _split_long(sentence: str) -> list[str]:
    """Cut an over-long sentence at commas/semicolons, then spaces, into ≤300-char parts."""
    clauses = [clause for clause in re.split(r"(?<=[,;])\s+", sentence) if clause]
    pieces: list[str] = []
    for clause in clauses:
        while len(clause) > _MAX_SENTENCE:
            cut = clause.rfind(" ", 0, _MAX_SENTENCE + 1)
            if cut <= 0:
                cut = _MAX_SENTENCE
            pieces.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        if clause:
            pieces.append(clause)
    # Merge neighbouring clauses again while they fit, so TTS gets natural phrases.
    merged: list[str] = []
    for piece in pieces:
        if merged and len(merged[-1]) + 1 + len(piece) <= _MAX_SENTENCE:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def _open_sentence(sentence: str, rules: PunctuationRules) -> str:
    stripped = sentence.rstrip("\"'”’»)] ")
    if not stripped:
        return sentence
    mark = stripped[-1]
    opener = {"?": rules.question_open, "!": rules.exclamation_open}.get(mark)
    if not opener or opener in sentence:
        return sentence
    # Open before the last clause that starts like a question ("Hola, ¿cómo estás?").
    for match in reversed(list(re.finditer(r",\s+", sentence))):
        rest = sentence[match.end() :]
        words = [word.lower().strip(",.;:?!") for word in rest.split(maxsplit=2)]
        if rules.is_question(words):
            return sentence[: match.end()] + opener + rest
    lead = len(sentence) - len(sentence.lstrip("\"'“‘«( "))
    return sentence[:lead] + opener + sentence[lead:]
