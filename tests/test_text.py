"""Specification of the text utilities: punctuation restoration, sentence splitting, WER form."""

from __future__ import annotations

import pytest

from pipeline.text import (
    normalize_for_wer,
    restore_punctuation,
    split_sentences,
)

# --- restore_punctuation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "restored"),
    [
        # LibriVox / pocketsphinx output: lowercase, no punctuation.
        ("he was not an ill disposed young man", "He was not an ill disposed young man."),
        # Starts like a question ("had he") but is an inverted conditional.
        (
            "had he married a more amiable woman he might have been made still more "
            "respectable than he was",
            "Had he married a more amiable woman he might have been made still more "
            "respectable than he was.",
        ),
        ("how are you today", "How are you today?"),
        ("i think i'm late", "I think I'm late."),
        ("i've seen it and i'll say so i'd say", "I've seen it and I'll say so I'd say."),
        ("where is the station", "Where is the station?"),
        ("what's the time", "What's the time?"),
        ("why not", "Why not?"),
        ("how much is it", "How much is it?"),
        ("do you like it", "Do you like it?"),
        ("is there any milk", "Is there any milk?"),
        ("can i help", "Can I help?"),
        ("is the shop open", "Is the shop open?"),
        ("it's cold isn't it", "It's cold isn't it?"),
        # Names stay lowercase: only the titles are known.
        ("mr smith met dr jones", "Mr. smith met Dr. jones."),
        ("i called mr", "I called Mr."),
    ],
)
def test_restores_english_casing_and_marks(heard: str, restored: str) -> None:
    assert restore_punctuation(heard, "en") == restored


@pytest.mark.parametrize(
    "statement",
    [
        "when i was young i lived by the sea",  # wh-word opening a subordinate clause
        "where we live it rains a lot",
        "what i mean is that it works",
        "how nice",
        "what a day",
        "do it now",  # an order, not "do" + subject
        "have a seat",
        "were i you i would go",  # subjunctive inversion
        "may you live long",
        "which is why i left",
    ],
)
def test_does_not_turn_english_statements_into_questions(statement: str) -> None:
    assert restore_punctuation(statement, "en").endswith(".")


@pytest.mark.parametrize(
    ("heard", "restored"),
    [
        ("qué hora es", "¿Qué hora es?"),
        ("por qué no vienes", "¿Por qué no vienes?"),
        ("dónde está el gato", "¿Dónde está el gato?"),
        ("cómo estás", "¿Cómo estás?"),
        # Unaccented "cuando" is a conjunction, not a question.
        ("cuando llegues llámame", "Cuando llegues llámame."),
        ("el gato es negro", "El gato es negro."),
    ],
)
def test_restores_spanish(heard: str, restored: str) -> None:
    assert restore_punctuation(heard, "es") == restored


def test_other_languages_get_casing_and_a_full_stop() -> None:
    assert restore_punctuation("bonjour tout le monde", "fr") == "Bonjour tout le monde."


def test_collapses_whitespace() -> None:
    assert restore_punctuation("  hello   there \n", "en") == "Hello there."


@pytest.mark.parametrize(
    "punctuated",
    ["Already cased text", "no capitals, but a comma", "is it done?", "Sí. ¿Qué tal?"],
)
def test_leaves_punctuated_or_cased_text_alone(punctuated: str) -> None:
    assert restore_punctuation(f"  {punctuated} ", "en") == punctuated


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_text_restores_to_empty(blank: str) -> None:
    assert restore_punctuation(blank, "en") == ""


# --- split_sentences -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        (
            "Mr. Smith met Mrs. Jones and Dr. Who. They talked.",
            ["Mr. Smith met Mrs. Jones and Dr. Who.", "They talked."],
        ),
        ("It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
        ("Use tools, e.g. a hammer. Done.", ["Use tools, e.g. a hammer.", "Done."]),
        ("J. R. R. Tolkien wrote it. Really.", ["J. R. R. Tolkien wrote it.", "Really."]),
        ("Wait... What?! No…", ["Wait...", "What?!", "No…"]),
        ("Hola. ¿Qué tal? ¡Muy bien!", ["Hola.", "¿Qué tal?", "¡Muy bien!"]),
        ("Hola.¿Qué tal?", ["Hola.", "¿Qué tal?"]),
        ('"Stop!" he said. "Why?" She left.', ['"Stop!" he said.', '"Why?"', "She left."]),
        ("no final mark", ["no final mark"]),
        ("First paragraph\n\nSecond one.", ["First paragraph", "Second one."]),
        ("", []),
        ("   ", []),
    ],
)
def test_splits_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_splits_very_long_sentences_at_commas() -> None:
    clause = "and then the long story went on for a while without any full stop"
    text = ", ".join([clause] * 12) + "."
    pieces = split_sentences(text)
    assert len(pieces) > 1
    assert all(len(piece) <= 300 for piece in pieces)
    assert " ".join(pieces) == text
    assert all(piece.endswith((",", ".")) for piece in pieces)


def test_splits_a_long_clause_without_commas_at_spaces() -> None:
    text = " ".join(["word"] * 200) + "."
    pieces = split_sentences(text)
    assert all(len(piece) <= 300 for piece in pieces)
    assert " ".join(pieces) == text


# --- normalize_for_wer -----------------------------------------------------------------


def test_normalizes_for_wer() -> None:
    assert normalize_for_wer("Mr. Smith said: “I’m here,” to Dr Who—and Mrs. Jones!") == (
        "mister smith said i'm here to doctor who and missus jones"
    )


def test_normalize_keeps_inner_apostrophes_and_splits_hyphens() -> None:
    assert normalize_for_wer("'Tis a well-known   'quote'") == "tis a well known quote"


def test_normalize_blank_and_punctuation_only() -> None:
    assert normalize_for_wer(" ... !? ") == ""
