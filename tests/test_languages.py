"""Specification of the language registry: names, codes, tag normalisation, punctuation
rules and what a set of engines can do with each language."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline import languages
from pipeline.errors import UnsupportedLanguageError
from pipeline.languages import (
    ENGINE_FAMILIES,
    LanguageSupport,
    display_name,
    engine_code,
    family_codes,
    finish_translation,
    from_engine_code,
    known_codes,
    lookup,
    name,
    nllb_code,
    normalize,
    punctuation_rules,
)
from pipeline.text import restore_punctuation, split_sentences
from tests.fakes import BeepTTSEngine, TagMTEngine, ToneASREngine

ROOT = Path(__file__).resolve().parent.parent

# What the engines' own documentation lists, kept here as the expectation.
XTTS_V2 = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn",
           "hu", "ko", "ja", "hi")  # fmt: skip
PARAKEET_V3 = ("bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "hr", "hu", "it",
               "lt", "lv", "mt", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sv", "uk")  # fmt: skip
# The table polyvox's Apertium engine had before the registry (mode-file code → ISO).
OLD_APERTIUM = {
    "afr": "af", "ara": "ar", "arg": "an", "bel": "be", "bre": "br", "bul": "bg",
    "cat": "ca", "ces": "cs", "cos": "co", "cym": "cy", "dan": "da", "deu": "de",
    "ell": "el", "eng": "en", "epo": "eo", "est": "et", "eus": "eu", "fao": "fo",
    "fas": "fa", "fin": "fi", "fra": "fr", "gla": "gd", "gle": "ga", "glg": "gl",
    "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu", "ind": "id", "isl": "is",
    "ita": "it", "jpn": "ja", "kaz": "kk", "kir": "ky", "kor": "ko", "lav": "lv",
    "lit": "lt", "mkd": "mk", "mlt": "mt", "msa": "ms", "nld": "nl", "nno": "nn",
    "nob": "nb", "oci": "oc", "pol": "pl", "por": "pt", "ron": "ro", "rus": "ru",
    "slk": "sk", "slv": "sl", "sme": "se", "spa": "es", "sqi": "sq", "srd": "sc",
    "srp": "sr", "swe": "sv", "tat": "tt", "tha": "th", "tur": "tr", "ukr": "uk",
    "urd": "ur", "uzb": "uz", "vie": "vi", "zho": "zh",
    "ca": "ca", "en": "en", "es": "es", "eu": "eu", "fr": "fr", "gl": "gl",
    "it": "it", "oc": "oc", "pt": "pt", "ro": "ro",
}  # fmt: skip
# The NLLB engine's table before the registry (ISO → NLLB), minus "no" (now "nb").
OLD_NLLB = (
    "af afr_Latn am amh_Ethi ar arb_Arab az azj_Latn be bel_Cyrl bg bul_Cyrl bn ben_Beng "
    "bs bos_Latn ca cat_Latn cs ces_Latn cy cym_Latn da dan_Latn de deu_Latn el ell_Grek "
    "en eng_Latn es spa_Latn et est_Latn eu eus_Latn fa pes_Arab fi fin_Latn fr fra_Latn "
    "ga gle_Latn gl glg_Latn gu guj_Gujr ha hau_Latn he heb_Hebr hi hin_Deva hr hrv_Latn "
    "hu hun_Latn hy hye_Armn id ind_Latn is isl_Latn it ita_Latn ja jpn_Jpan ka kat_Geor "
    "kk kaz_Cyrl km khm_Khmr kn kan_Knda ko kor_Hang lo lao_Laoo lt lit_Latn lv lvs_Latn "
    "mk mkd_Cyrl ml mal_Mlym mr mar_Deva ms zsm_Latn mt mlt_Latn my mya_Mymr nb nob_Latn "
    "ne npi_Deva nl nld_Latn pa pan_Guru pl pol_Latn pt por_Latn ro ron_Latn ru rus_Cyrl "
    "si sin_Sinh sk slk_Latn sl slv_Latn sq als_Latn sr srp_Cyrl sv swe_Latn sw swh_Latn "
    "ta tam_Taml te tel_Telu th tha_Thai tl tgl_Latn tr tur_Latn uk ukr_Cyrl ur urd_Arab "
    "uz uzn_Latn vi vie_Latn yo yor_Latn zh zho_Hans zu zul_Latn"
).split()


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "en"),
        ("EN", "en"),
        (" es ", "es"),
        ("en-US", "en"),
        ("en_GB", "en"),
        ("pt_BR", "pt"),
        ("es-419", "es"),
        ("sr-Latn-RS", "sr"),
        ("zh-Hant", "zh"),
        ("zh-TW", "zh"),
        ("zh-cn", "zh"),  # XTTS
        ("cmn", "zh"),  # espeak-ng
        ("eng", "en"),  # ISO 639-3
        ("spa", "es"),
        ("ger", "de"),  # ISO 639-2/B
        ("spa_Latn", "es"),  # NLLB
        ("zho_Hant", "zh"),
        ("prs_Arab", "fa"),
        ("arb", "ar"),  # an individual language of a macrolanguage
        ("iw", "he"),  # deprecated ISO 639-1
        ("jw", "jv"),  # Whisper
        ("no", "nb"),
        ("haw", "haw"),  # no ISO 639-1 code
        ("yue-Hant-HK", "yue"),
    ],
)
def test_normalises_every_kind_of_tag(tag: str, code: str) -> None:
    assert normalize(tag) == code


@pytest.mark.parametrize("tag", ["", "   ", "xx", "english", "qqq_Latn", "123", "x-klingon"])
def test_unknown_tags_are_rejected_naming_the_tag(tag: str) -> None:
    with pytest.raises(UnsupportedLanguageError) as info:
        normalize(tag)
    assert f"'{tag}'" in str(info.value)
    assert info.value.retryable is False


def test_lenient_normalisation_keeps_unknown_codes() -> None:
    # Apertium ships Asturian pairs ("ast-spa.mode") that the registry does not list.
    assert normalize("AST", strict=False) == "ast"
    assert normalize("en-US", strict=False) == "en"
    with pytest.raises(UnsupportedLanguageError):
        normalize(" ", strict=False)


def test_names_and_scripts() -> None:
    assert name("es-MX") == "Spanish"
    assert display_name("es") == "Spanish (español)"
    assert display_name("de") == "German (Deutsch)"
    assert display_name("en") == "English"
    arabic = lookup("ar")
    assert (arabic.script, arabic.rtl, arabic.native) == ("Arab", True, "العربية")
    assert lookup("he").rtl and lookup("ur").rtl and not lookup("ru").rtl
    assert {lookup(c).script for c in ("ru", "zh", "ja", "hi", "ko")} == {
        "Cyrl",
        "Hans",
        "Jpan",
        "Deva",
        "Kore",
    }
    codes = known_codes()
    assert list(codes) == sorted(codes) and len(set(codes)) == len(codes)
    assert all(lookup(code).code == code for code in codes)


def test_every_language_has_names_a_script_and_its_iso639_3_code() -> None:
    for code in known_codes():
        info = lookup(code)
        assert info.name and info.native and re.fullmatch(r"[A-Z][a-z]{3}", info.script), code
        assert re.fullmatch(r"[a-z]{3}", info.iso639_3), code
        assert normalize(info.iso639_3) == code


# --- engine codes ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ENGINE_FAMILIES)
def test_every_engine_code_round_trips(family: str) -> None:
    codes = family_codes(family)
    assert codes, family
    for code, family_code in codes.items():
        assert engine_code(code, family) == family_code
        assert lookup(code).code_for(family) == family_code
        assert from_engine_code(family, family_code) == code
        # An engine's own spelling is a tag the normaliser accepts too.
        assert normalize(family_code) == code


def test_apertium_legacy_pair_names_round_trip() -> None:
    for mode_code, iso in OLD_APERTIUM.items():
        assert from_engine_code("apertium", mode_code) == iso
        assert mode_code in lookup(iso).apertium
    assert lookup("es").apertium == ("spa", "es")
    assert lookup("de").apertium == ("deu",)


def test_engine_families_cover_the_reference_models() -> None:
    assert sorted(family_codes("xtts").values()) == sorted(XTTS_V2)
    assert engine_code("zh", "xtts") == "zh-cn"
    assert sorted(family_codes("nemo")) == sorted(PARAKEET_V3)
    for code, nllb in zip(OLD_NLLB[::2], OLD_NLLB[1::2], strict=True):
        assert engine_code(code, "nllb") == nllb
    assert engine_code("nb", "whisper") == "no" and engine_code("jv", "whisper") == "jw"
    assert engine_code("en", "espeak") == "en-us" and engine_code("zh", "espeak") == "cmn"


def test_engine_codes_match_the_upstream_language_lists() -> None:
    pytest.importorskip("transformers")
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert set(family_codes("nllb").values()) <= set(FAIRSEQ_LANGUAGE_CODES)
    assert set(family_codes("whisper").values()) == set(LANGUAGES)


def test_a_family_without_the_language_is_an_unsupported_language() -> None:
    with pytest.raises(UnsupportedLanguageError, match="xtts has no code for Swedish"):
        engine_code("sv", "xtts")
    with pytest.raises(UnsupportedLanguageError, match="'xyz' is not a nemo language code"):
        from_engine_code("nemo", "xyz")
    with pytest.raises(ValueError, match="unknown engine family"):
        family_codes("marian")


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "eng_Latn"),
        ("pt-BR", "por_Latn"),
        ("zh", "zho_Hans"),
        ("zh-TW", "zho_Hant"),
        ("zh-HK", "zho_Hant"),
        ("zh_Hant", "zho_Hant"),
        ("fa-AF", "prs_Arab"),
        ("az-Arab", "azb_Arab"),
        ("zho_Hant", "zho_Hant"),  # NLLB codes pass through
        ("ace_Arab", "ace_Arab"),
    ],
)
def test_nllb_codes_keep_the_regional_script(tag: str, code: str) -> None:
    assert nllb_code(tag) == code


def test_nllb_code_rejects_languages_nllb_lacks() -> None:
    with pytest.raises(UnsupportedLanguageError, match="nllb has no code for Corsican"):
        nllb_code("co")
    with pytest.raises(UnsupportedLanguageError):
        nllb_code("xx")


# --- punctuation rules -----------------------------------------------------------------


def test_question_rules_are_per_language() -> None:
    english, spanish, french = (punctuation_rules(c) for c in ("en", "es-MX", "fr"))
    assert english.is_question("how are you today".split())
    assert not english.is_question("when i was young".split())
    assert spanish.is_question("por qué no vienes".split())
    assert not spanish.is_question("cuando llegues llámame".split())
    # No rule for French: never guess a question.
    assert not french.is_question("est-ce que tu viens".split())
    assert not english.is_question([])
    assert spanish.question_wrap == ("¿", "?")
    assert english.question_wrap == ("", "?")
    assert english.fix_words(["i", "think", "i'm", "mr"]) == ["I", "think", "I'm", "Mr."]
    assert spanish.fix_words(["i"]) == ["i"]
    # Unknown languages get the plain rules instead of an error.
    assert punctuation_rules("xx") == punctuation_rules("it")
    assert not punctuation_rules("xx").is_question(["what"])


@pytest.mark.parametrize(
    ("heard", "language", "restored"),
    [
        ("how are you today", "en-GB", "How are you today?"),
        ("qué hora es", "es_MX", "¿Qué hora es?"),
        ("你好吗", "zh", "你好吗。"),
        ("नमस्ते दोस्तों", "hi", "नमस्ते दोस्तों।"),
        ("مرحبا بكم", "ar", "مرحبا بكم."),
        ("iyi günler", "tr", "İyi günler."),
        ("istanbul", "en", "Istanbul."),
        ("สวัสดี ครับ", "th", "สวัสดี ครับ"),  # Thai ends sentences with a space
        ("bonjour tout le monde", "xx", "Bonjour tout le monde."),
    ],
)
def test_restore_punctuation_follows_the_language_rules(
    heard: str, language: str, restored: str
) -> None:
    assert restore_punctuation(heard, language) == restored


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("你好。你好吗？我很好！", ["你好。", "你好吗？", "我很好！"]),
        ("नमस्ते। आप कैसे हैं?", ["नमस्ते।", "आप कैसे हैं?"]),
        ("مرحبا؟ نعم.", ["مرحبا؟", "نعم."]),
        ("یہ کتاب ہے۔ وہ قلم ہے۔", ["یہ کتاب ہے۔", "وہ قلم ہے۔"]),
        ("La Sra. López vino. Bien.", ["La Sra. López vino.", "Bien."]),
    ],
)
def test_sentences_end_at_every_languages_marks(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize(
    ("text", "finished"),
    [
        ("Hola, cómo eres hoy?", "Hola, ¿cómo eres hoy?"),
        ("Vienes mañana?", "¿Vienes mañana?"),
        ("Qué bien!", "¡Qué bien!"),
        ("Sí. Vienes? Claro!", "Sí. ¿Vienes? ¡Claro!"),
        ("¿Ya está?", "¿Ya está?"),
        ('"Vienes?"', '"¿Vienes?"'),
        ("El gato es negro.", "El gato es negro."),
        ("", ""),
    ],
)
def test_finish_translation_adds_spanish_opening_marks(text: str, finished: str) -> None:
    assert finish_translation(text, "es") == finished
    assert finish_translation(text, "es-AR") == finished


@pytest.mark.parametrize("language", ["en", "fr", "zh", "xx"])
def test_finish_translation_leaves_other_languages_alone(language: str) -> None:
    assert finish_translation("Vienes mañana? Qué bien!", language) == "Vienes mañana? Qué bien!"


def test_sentence_marks_are_registry_data() -> None:
    assert set("。！？") <= set(languages.UNSPACED_SENTENCE_END_MARKS)
    assert set(".!?…।؟") <= set(languages.SENTENCE_END_MARKS)
    # The Greek question mark looks like ";", a clause mark elsewhere: it never splits.
    assert ";" not in languages.SENTENCE_END_MARKS
    assert punctuation_rules("el").question_mark == ";"
    assert languages.opening_marks() == "¡¿"
    assert {"mr", "sra", "mme", "e.g"} <= languages.abbreviations()


# --- capabilities ----------------------------------------------------------------------


class _OnlyEnglishSpanishTTS(BeepTTSEngine):
    languages = frozenset({"en", "es"})


class _TaggedASR(ToneASREngine):
    languages = frozenset({"en-US", "AST"})


def test_support_from_engines() -> None:
    support = LanguageSupport.from_engines(ToneASREngine(), TagMTEngine(), BeepTTSEngine())
    assert support.recognise == {"en", "es"}
    assert support.speak == {"en", "es", "fr"}
    assert support.translate == {("en", "es"), ("es", "en"), ("en", "fr")}
    assert support.can_recognise("EN-us") and not support.can_recognise("fr")
    assert support.can_speak("fr") and not support.can_speak("de")
    assert support.can_translate("en-GB", "spa") and not support.can_translate("fr", "en")
    assert support.targets("en") == ["es", "fr"]
    assert support.targets("es") == ["en"]


def test_what_a_listener_can_hear() -> None:
    support = LanguageSupport.from_engines(ToneASREngine(), TagMTEngine(), BeepTTSEngine())
    # Every recognised language spoken: MT + TTS reach French too.
    assert support.hearable() == ["en", "es", "fr"]
    assert support.hearable(["es"]) == ["en", "es"]
    assert support.hearable(["en-US"]) == ["en", "es", "fr"]
    # Nobody can recognise French speech: French speakers are only heard directly.
    assert support.hearable(["fr"]) == ["fr"]
    # A target TTS cannot speak is not hearable.
    mute = LanguageSupport.from_engines(ToneASREngine(), TagMTEngine(), _OnlyEnglishSpanishTTS())
    assert mute.hearable(["en"]) == ["en", "es"]


def test_describe_lists_languages_with_names_for_user_interfaces() -> None:
    support = LanguageSupport.from_engines(ToneASREngine(), TagMTEngine(), _OnlyEnglishSpanishTTS())
    assert support.describe() == [
        {
            "code": "en",
            "name": "English",
            "native": "English",
            "recognise": True,
            "speak": True,
            "hear": True,
        },
        {
            "code": "fr",
            "name": "French",
            "native": "français",
            "recognise": False,
            "speak": False,
            "hear": False,
        },
        {
            "code": "es",
            "name": "Spanish",
            "native": "español",
            "recognise": True,
            "speak": True,
            "hear": True,
        },
    ]


def test_engine_codes_the_registry_does_not_know_are_kept() -> None:
    support = LanguageSupport.from_engines(
        _TaggedASR(), TagMTEngine([("ast", "es")]), BeepTTSEngine()
    )
    assert support.recognise == {"en", "ast"}
    assert support.hearable(["ast"]) == ["ast", "es"]
    entry = next(e for e in support.describe() if e["code"] == "ast")
    assert (entry["name"], entry["recognise"]) == ("ast", True)


# --- one registry ----------------------------------------------------------------------

# Modules that must ask the registry instead of keeping language tables of their own.
_CHECKED = [
    *sorted((ROOT / "pipeline" / "engines").rglob("*.py")),
    ROOT / "pipeline" / "text.py",
    ROOT / "bot" / "config.py",
    ROOT / "bot" / "discord_settings.py",
]
_NLLB_LIKE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def _language_like(value: object) -> bool:
    """An NLLB code, or a lowercase tag the registry knows ("es", "spa", "zh-cn")."""
    if not isinstance(value, str):
        return False
    if _NLLB_LIKE.match(value):
        return True
    if value != value.lower() or not 2 <= len(value) <= 5:
        return False
    try:
        normalize(value)
    except UnsupportedLanguageError:
        return False
    return True


@pytest.mark.parametrize("path", _CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_keeps_its_own_language_table(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert not _NLLB_LIKE.match(node.value), f"{path.name}: NLLB code {node.value!r}"
            # Engine-specific spellings belong to the registry ("spa" in Apertium).
            assert node.value not in {"spa", "eng", "zh-cn", "en-us", "cmn"}, (
                f"{path.name}:{node.lineno}: engine language code {node.value!r}"
            )
        if isinstance(node, ast.Dict | ast.List | ast.Tuple | ast.Set):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            codes = [
                item.value
                for item in items
                if isinstance(item, ast.Constant) and _language_like(item.value)
            ]
            # One or two codes are a default or an engine's fact ("en" for an English
            # model); three or more are a table that belongs in pipeline/languages.py.
            assert len(codes) < 3, f"{path.name}:{node.lineno}: language table {codes}"
