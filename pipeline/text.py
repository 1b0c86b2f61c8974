"""Text utilities shared by the engines and processors: punctuation, sentences, WER.

Everything here is a pure function on strings; nothing knows about frames or models.

* :func:`restore_punctuation` gives bare ASR output (``"how are you today"``) sentence
  casing and a final mark (``"How are you today?"``) so that MT and TTS see a sentence.
* :func:`split_sentences` cuts text into sentences for TTS to speak one at a time.
* :func:`spanish_question_marks` adds the opening ``¿``/``¡`` that Apertium leaves out.
* :func:`normalize_for_wer` puts transcripts and references in one form for comparison.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "normalize_for_wer",
    "restore_punctuation",
    "spanish_question_marks",
    "split_sentences",
]

#: Characters whose presence means the text was punctuated by its producer.
_PUNCTUATION = frozenset('.,;:!?¿¡…"“”«»()')

# --- English ---------------------------------------------------------------------------

_EN_WORDS = {
    "i": "I",
    "i'm": "I'm",
    "i've": "I've",
    "i'll": "I'll",
    "i'd": "I'd",
    "mr": "Mr.",
    "mrs": "Mrs.",
    "ms": "Ms.",
    "dr": "Dr.",
}
_EN_WH = frozenset({"what", "where", "when", "why", "who", "whose", "whom", "which", "how"})
# A wh-word followed by one of these asks ("where is it"); followed by anything else it is
# usually a subordinate clause ("when i was young", "what i mean is").
_EN_AUXILIARIES = frozenset(
    {
        "is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "will",
        "would", "shall", "should", "may", "might", "must", "have", "has", "had", "'s",
        "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "can't",
        "couldn't", "won't", "wouldn't", "shouldn't", "haven't", "hasn't",
    }
)  # fmt: skip
# Wh-words that open a question whatever follows: "why not", "who wants coffee".
_EN_WH_ALWAYS = frozenset({"why", "who", "whose", "whom"})
# Second words that make a question of a wh-word that otherwise is not one.
_EN_WH_SECOND = {
    "how": frozenset({"much", "many", "long", "far", "often", "old", "come", "about", "soon"}),
    "what": frozenset({"about", "if", "time", "kind", "sort", "happened", "else"}),
    "which": frozenset({"one", "ones", "way", "of"}),
}
# Sentences that open an auxiliary + subject pair are questions ("do you", "is it") ...
_EN_QUESTION_AUXILIARIES = _EN_AUXILIARIES - {"had", "'s", "must", "may", "might"}
# ... but "had he married ..." and "were i you ..." are inverted conditionals, and
# "may" / "might" / "must" + subject are rare in questions and common in wishes
# ("may you live long"), so those never start a question.
_EN_SUBJECTS = frozenset(
    {
        "you", "i", "we", "they", "he", "she", "it", "there", "this", "that", "these",
        "those", "anyone", "anybody", "someone", "somebody", "everyone", "everybody",
    }
)  # fmt: skip
# "do it now", "have this one": with these auxiliaries a singular subject means an order.
_EN_PLURAL_ONLY_AUXILIARIES = frozenset({"do", "have", "don't", "haven't"})
_EN_PLURAL_SUBJECTS = frozenset({"you", "i", "we", "they", "these", "those"})
# "is the station open", "will mr smith come"; but "do the dishes", "have a seat".
_EN_DETERMINERS = frozenset(
    {"the", "your", "my", "his", "her", "our", "their", "mr", "mrs", "ms", "dr"}
)
_EN_SUBJUNCTIVE_WERE = frozenset({"i", "he", "she", "it"})
_EN_CONTRACTED_WH = re.compile(r"^(what|where|when|why|who|how)'(s|re|d|ll|ve)$")
_EN_NEGATIVE_AUXILIARIES = frozenset(word for word in _EN_AUXILIARIES if word.endswith("n't"))

# --- Spanish ---------------------------------------------------------------------------

# Only the accented forms ask; "que", "donde", "cuando", "como" are conjunctions.
_ES_INTERROGATIVES = frozenset(
    {
        "qué", "dónde", "adónde", "cuándo", "quién", "quiénes", "cómo", "cuál", "cuáles",
        "cuánto", "cuánta", "cuántos", "cuántas",
    }
)  # fmt: skip

# --- Sentence splitting ----------------------------------------------------------------

#: Tokens ending in "." that do not end a sentence (compared lowercased, without the dot).
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "sra", "srta", "dra", "sres",
        "vs", "etc", "e.g", "i.e", "cf", "approx", "no", "nr", "fig", "vol", "ca",
        "mme", "mlle", "ud", "uds", "hr", "fr",
    }
)  # fmt: skip
_MAX_SENTENCE = 300
# A run of end marks, then closing quotes/brackets, then whitespace, an opener, or the end.
_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’»)\]]*(?=\s|[¿¡]|$)|[。！？]+[\"'”’»)\]]*")
_PARAGRAPH = re.compile(r"\n\s*\n")


def restore_punctuation(text: str, language: str) -> str:
    """Give bare ASR output sentence casing and a final punctuation mark.

    Text that already has an uppercase letter or a punctuation mark is taken to be
    punctuated by its producer and only trimmed. Otherwise the text is treated as one
    sentence: whitespace is collapsed, the first letter is capitalised and a final mark
    is added.

    The question test is deliberately conservative, because a wrong "?" changes the
    intonation TTS gives a statement, while a missing one only flattens a question:

    * English: a question starts with a contracted wh-word ("what's", "where'd"); with
      "why", "who", "whose" or "whom"; with any wh-word followed by an auxiliary ("where
      is", "how do"); with "how much/many/long/...", "what about/if/time/...", "which
      one/way/of"; or with an auxiliary followed by a subject ("do you", "is it", "can
      i", "is the ..."; but "do"/"have" only with "you", "i", "we", "they", "these",
      "those", since "do it now" and "have a seat" are orders). "had" never starts a question ("had he married a more amiable woman he
      might ..." is an inverted conditional), nor do "may"/"might"/"must" or "were" with
      a singular subject ("were i you"). A trailing negative tag ("... isn't it",
      "... don't you") also makes a question. Sentence length is not used: long
      questions and short conditionals are both common in speech. "i", "i'm", "i've",
      "i'll", "i'd" become "I", "I'm", ...; "mr", "mrs", "ms", "dr" become "Mr.", ...
    * Spanish: a question starts with an accented interrogative ("qué", "dónde",
      "cuándo", "por qué", "quién", "cómo", "cuál", "cuánto", ...) and is wrapped in
      "¿...?". The unaccented forms are conjunctions and do not count.
    * Other languages: only casing and a final ".".

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

    words = stripped.split()
    lang = language.lower().split("-")[0].split("_")[0]
    question = False
    if lang == "en":
        question = _is_english_question(words)
        words = [_EN_WORDS.get(word, word) for word in words]
    elif lang == "es":
        question = _is_spanish_question(words)

    sentence = _capitalize_first(" ".join(words))
    if question:
        return f"¿{sentence}?" if lang == "es" else f"{sentence}?"
    # The input had no punctuation, so a final "." can only be an abbreviation's ("Mr.").
    return sentence if sentence.endswith(".") else f"{sentence}."


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, each keeping its own punctuation.

    A sentence ends at a run of ``. ! ? …`` (and the CJK ``。！？``) followed by optional
    closing quotes or brackets and then whitespace, an opening ``¿``/``¡``, or the end
    of the text; a blank line also ends one. A period does not end a sentence after a
    known abbreviation ("Mr.", "Dr.", "e.g.", "etc.") or a single capital initial
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


def spanish_question_marks(text: str) -> str:
    """Add the opening "¿" or "¡" to Spanish sentences that end in "?" or "!" without one.

    The rule is simple, because machine translation output gives little to go on: in
    each sentence (as :func:`split_sentences` sees them) that ends in "?" or "!" and has
    no opener of that kind, the opener goes before the last comma-separated clause that
    starts with an accented interrogative ("Hola, cómo eres hoy?" → "Hola, ¿cómo eres
    hoy?"), and otherwise at the start of the sentence, after any opening quotes
    ("Vienes mañana?" → "¿Vienes mañana?"). Everything else is left as it is.

    Args:
        text: Spanish text, typically Apertium output.

    Returns:
        The text with openers added.
    """
    pieces: list[str] = []
    position = 0
    for start, end in _sentence_spans(text):
        pieces.append(text[position:start])
        pieces.append(_open_spanish_sentence(text[start:end]))
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


def _capitalize_first(text: str) -> str:
    for index, char in enumerate(text):
        if char.isalpha():
            return text[:index] + char.upper() + text[index + 1 :]
    return text


def _is_english_question(words: list[str]) -> bool:
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if _EN_CONTRACTED_WH.match(first):
        return True
    if first in _EN_WH:
        if first in _EN_WH_ALWAYS or second in _EN_AUXILIARIES:
            # "which is why ..." continues a statement rather than asking.
            return not (first == "which" and second == "is" and words[2:3] == ["why"])
        return second in _EN_WH_SECOND.get(first, ())
    if first in _EN_PLURAL_ONLY_AUXILIARIES:
        return second in _EN_PLURAL_SUBJECTS
    if first in _EN_QUESTION_AUXILIARIES and (second in _EN_SUBJECTS or second in _EN_DETERMINERS):
        return not (first == "were" and second in _EN_SUBJUNCTIVE_WERE)
    # A negative tag at the end: "it's cold isn't it", "you know him don't you".
    return len(words) > 2 and words[-2] in _EN_NEGATIVE_AUXILIARIES and words[-1] in _EN_SUBJECTS


def _is_spanish_question(words: list[str]) -> bool:
    first = words[0]
    if first in _ES_INTERROGATIVES:
        return True
    return first == "por" and len(words) > 1 and words[1] == "qué"


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


def _open_spanish_sentence(sentence: str) -> str:
    stripped = sentence.rstrip("\"'”’»)] ")
    if not stripped:
        return sentence
    mark = stripped[-1]
    opener = {"?": "¿", "!": "¡"}.get(mark)
    if opener is None or opener in sentence:
        return sentence
    # Open before the last clause that starts with an interrogative ("Hola, ¿cómo estás?").
    for match in reversed(list(re.finditer(r",\s+", sentence))):
        rest = sentence[match.end() :]
        words = [word.lower().strip(",.;:?!") for word in rest.split(maxsplit=2)]
        if words and _is_spanish_question(words):
            return sentence[: match.end()] + opener + rest
    lead = len(sentence) - len(sentence.lstrip("\"'“‘«( "))
    return sentence[:lead] + opener + sentence[lead:]
