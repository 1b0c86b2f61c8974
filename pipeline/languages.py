"""The language registry: every language polyvox knows, in one place.

Engines, transports, the configuration and the text utilities ask this module instead of
keeping tables of their own:

* **Names and codes.** :class:`LanguageInfo` holds a language's ISO 639-1 code (the
  code used everywhere inside polyvox), its English and native names, its script, and
  the code each engine family uses for it: NLLB-200 (``spa_Latn``), Apertium (``spa``,
  and ``es`` in older pairs), espeak-ng (``es``), XTTS v2 (``es``; ``zh-cn`` for
  Chinese), Whisper (``es``; ``jw`` for Javanese, ``no`` for Norwegian Bokmål) and NeMo
  (Parakeet-TDT-0.6B-v3 / Canary-1B-v2, ISO 639-1). A family's code is set exactly for
  the languages that family's reference model handles, so ``family_codes("xtts")`` is
  XTTS v2's 17 languages and ``family_codes("nemo")`` Parakeet v3's 25.
* **One tag normaliser.** :func:`normalize` turns any tag people or engines write
  (``"EN"``, ``"en-US"``, ``"pt_BR"``, ``"eng"``, ``"spa_Latn"``, ``"zh-Hant"``, ``"iw"``)
  into the ISO 639-1 code, or raises :class:`~pipeline.errors.UnsupportedLanguageError`
  naming the tag. :func:`nllb_code` keeps what NLLB needs from the region or script
  (``zh-TW`` → ``zho_Hant``).
* **Punctuation and script rules.** :class:`PunctuationRules` per language: how a
  sentence ends (``。`` in Chinese, ``।`` in Hindi), how a question is recognised in bare
  ASR output and wrapped (``¿...?`` in Spanish), word fixes (English ``i`` → ``I``), and
  :func:`finish_translation`, the clean-up machine translation output needs in its target
  language (Spanish gets its opening ``¿``/``¡``).
* **Capabilities.** :class:`LanguageSupport` says, for a set of loaded engines, which
  languages can be recognised, translated from → to, spoken, and heard by a listener,
  and describes them for user interfaces.

Codes inside polyvox are ISO 639-1 (BCP 47's primary subtag); a language without one uses
its ISO 639-3 code (Hawaiian ``haw``, Cantonese ``yue``). Nothing here knows about frames
or models.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.errors import UnsupportedLanguageError

__all__ = [
    "AUTO",
    "ENGINE_FAMILIES",
    "SENTENCE_END_MARKS",
    "UNSPACED_SENTENCE_END_MARKS",
    "LanguageInfo",
    "LanguageSupport",
    "PunctuationRules",
    "abbreviations",
    "display_name",
    "engine_code",
    "family_codes",
    "finish_translation",
    "from_engine_code",
    "is_auto",
    "known_codes",
    "lookup",
    "name",
    "nllb_code",
    "normalize",
    "opening_marks",
    "punctuation_marks",
    "punctuation_rules",
]

#: The spoken-language setting that asks for the language to be identified from speech
#: (``languages.speaker: auto``, ``polyvox translate --from auto``, a participant who
#: joins with it).
AUTO = "auto"

#: The engine families whose language codes the registry knows.
ENGINE_FAMILIES = ("nllb", "apertium", "espeak", "xtts", "whisper", "nemo")

#: Scripts written right to left (ISO 15924).
_RTL_SCRIPTS = frozenset({"Arab", "Hebr", "Thaa", "Syrc", "Nkoo", "Adlm"})


@dataclass(frozen=True)
class LanguageInfo:
    """One language and the codes every engine family uses for it.

    Attributes:
        code: ISO 639-1 code (ISO 639-3 where the language has no 639-1 code): the code
            polyvox uses internally, in settings and in APIs.
        name: English name ("Spanish").
        native: The language's name for itself ("español").
        script: Usual script, ISO 15924 ("Latn", "Cyrl", "Arab", "Hans", "Jpan", "Deva").
        rtl: Whether the script is written right to left.
        iso639_3: ISO 639-3 (= 639-2/T) code; macrolanguage codes where one exists
            ("ara", "fas", "zho").
        nllb: NLLB-200 / FLORES-200 code ("spa_Latn"); None where NLLB lacks the language.
        apertium: The codes Apertium's mode files use: the ISO 639-3 code, then the
            two-letter code of pairs from before Apertium moved to three letters.
        espeak: espeak-ng voice ("en-us", "cmn"); None where espeak-ng has none.
        xtts: XTTS v2 language code ("zh-cn"); None outside its 17 languages.
        whisper: Whisper language code ("jw" for Javanese); None outside its languages.
        nemo: Code for NeMo's multilingual checkpoints (Parakeet-TDT-0.6B-v3,
            Canary-1B-v2); None outside their 25 European languages.
    """

    code: str
    name: str
    native: str
    script: str
    rtl: bool
    iso639_3: str
    nllb: str | None = None
    apertium: tuple[str, ...] = ()
    espeak: str | None = None
    xtts: str | None = None
    whisper: str | None = None
    nemo: str | None = None

    def code_for(self, family: str) -> str | None:
        """This language's code in engine ``family`` (one of :data:`ENGINE_FAMILIES`).

        Raises:
            ValueError: ``family`` is not a known engine family.
        """
        if family not in ENGINE_FAMILIES:
            raise ValueError(
                f"unknown engine family {family!r} (known: {', '.join(ENGINE_FAMILIES)})"
            )
        if family == "apertium":
            return self.apertium[0] if self.apertium else None
        value: str | None = getattr(self, family)
        return value

    @property
    def display_name(self) -> str:
        """The name for menus: "Spanish (español)"; just "English" when both are the same."""
        return self.name if self.native == self.name else f"{self.name} ({self.native})"


# --- the table -------------------------------------------------------------------------

# One row per language. Empty strings: the family has no code for it. Sources: CLDR
# (names, scripts), ISO 639-3, the NLLB-200 tokenizer's language list, Whisper's
# tokenizer, `espeak-ng --voices`, XTTS v2's config and Parakeet-TDT-0.6B-v3's model card.
_TABLE: tuple[tuple[str, str, str, str, str, str, str, str, str, str], ...] = (
    # code   English name         native name             script  639-3   NLLB-200    espeak-ng  XTTS     Whisper  NeMo
    ("af",  "Afrikaans",          "Afrikaans",            "Latn", "afr", "afr_Latn", "af",    "",      "af",  ""),
    ("ak",  "Akan",               "Akan",                 "Latn", "aka", "aka_Latn", "",      "",      "",    ""),
    ("am",  "Amharic",            "አማርኛ",                 "Ethi", "amh", "amh_Ethi", "am",    "",      "am",  ""),
    ("an",  "Aragonese",          "aragonés",             "Latn", "arg", "",         "an",    "",      "",    ""),
    ("ar",  "Arabic",             "العربية",              "Arab", "ara", "arb_Arab", "ar",    "ar",    "ar",  ""),
    ("as",  "Assamese",           "অসমীয়া",               "Beng", "asm", "asm_Beng", "as",    "",      "as",  ""),
    ("ay",  "Aymara",             "Aymar aru",            "Latn", "aym", "ayr_Latn", "",      "",      "",    ""),
    ("az",  "Azerbaijani",        "azərbaycan",           "Latn", "aze", "azj_Latn", "az",    "",      "az",  ""),
    ("ba",  "Bashkir",            "башҡорт",              "Cyrl", "bak", "bak_Cyrl", "ba",    "",      "ba",  ""),
    ("be",  "Belarusian",         "беларуская",           "Cyrl", "bel", "bel_Cyrl", "be",    "",      "be",  ""),
    ("bg",  "Bulgarian",          "български",            "Cyrl", "bul", "bul_Cyrl", "bg",    "",      "bg",  "bg"),
    ("bm",  "Bambara",            "bamanakan",            "Latn", "bam", "bam_Latn", "",      "",      "",    ""),
    ("bn",  "Bengali",            "বাংলা",                 "Beng", "ben", "ben_Beng", "bn",    "",      "bn",  ""),
    ("bo",  "Tibetan",            "བོད་སྐད་",               "Tibt", "bod", "bod_Tibt", "",      "",      "bo",  ""),
    ("br",  "Breton",             "brezhoneg",            "Latn", "bre", "",         "",      "",      "br",  ""),
    ("bs",  "Bosnian",            "bosanski",             "Latn", "bos", "bos_Latn", "bs",    "",      "bs",  ""),
    ("ca",  "Catalan",            "català",               "Latn", "cat", "cat_Latn", "ca",    "",      "ca",  ""),
    ("co",  "Corsican",           "corsu",                "Latn", "cos", "",         "",      "",      "",    ""),
    ("cs",  "Czech",              "čeština",              "Latn", "ces", "ces_Latn", "cs",    "cs",    "cs",  "cs"),
    ("cv",  "Chuvash",            "чӑваш чӗлхи",          "Cyrl", "chv", "",         "cv",    "",      "",    ""),
    ("cy",  "Welsh",              "Cymraeg",              "Latn", "cym", "cym_Latn", "cy",    "",      "cy",  ""),
    ("da",  "Danish",             "dansk",                "Latn", "dan", "dan_Latn", "da",    "",      "da",  "da"),
    ("de",  "German",             "Deutsch",              "Latn", "deu", "deu_Latn", "de",    "de",    "de",  "de"),
    ("dz",  "Dzongkha",           "རྫོང་ཁ",                "Tibt", "dzo", "dzo_Tibt", "",      "",      "",    ""),
    ("ee",  "Ewe",                "eʋegbe",               "Latn", "ewe", "ewe_Latn", "",      "",      "",    ""),
    ("el",  "Greek",              "Ελληνικά",             "Grek", "ell", "ell_Grek", "el",    "",      "el",  "el"),
    ("en",  "English",            "English",              "Latn", "eng", "eng_Latn", "en-us", "en",    "en",  "en"),
    ("eo",  "Esperanto",          "Esperanto",            "Latn", "epo", "epo_Latn", "eo",    "",      "",    ""),
    ("es",  "Spanish",            "español",              "Latn", "spa", "spa_Latn", "es",    "es",    "es",  "es"),
    ("et",  "Estonian",           "eesti",                "Latn", "est", "est_Latn", "et",    "",      "et",  "et"),
    ("eu",  "Basque",             "euskara",              "Latn", "eus", "eus_Latn", "eu",    "",      "eu",  ""),
    ("fa",  "Persian",            "فارسی",                "Arab", "fas", "pes_Arab", "fa",    "",      "fa",  ""),
    ("fi",  "Finnish",            "suomi",                "Latn", "fin", "fin_Latn", "fi",    "",      "fi",  "fi"),
    ("fj",  "Fijian",             "Na Vosa Vakaviti",     "Latn", "fij", "fij_Latn", "",      "",      "",    ""),
    ("fo",  "Faroese",            "føroyskt",             "Latn", "fao", "fao_Latn", "",      "",      "fo",  ""),
    ("fr",  "French",             "français",             "Latn", "fra", "fra_Latn", "fr-fr", "fr",    "fr",  "fr"),
    ("ga",  "Irish",              "Gaeilge",              "Latn", "gle", "gle_Latn", "ga",    "",      "",    ""),
    ("gd",  "Scottish Gaelic",    "Gàidhlig",             "Latn", "gla", "gla_Latn", "gd",    "",      "",    ""),
    ("gl",  "Galician",           "galego",               "Latn", "glg", "glg_Latn", "",      "",      "gl",  ""),
    ("gn",  "Guarani",            "avañe’ẽ",              "Latn", "grn", "grn_Latn", "gn",    "",      "",    ""),
    ("gu",  "Gujarati",           "ગુજરાતી",               "Gujr", "guj", "guj_Gujr", "gu",    "",      "gu",  ""),
    ("ha",  "Hausa",              "Hausa",                "Latn", "hau", "hau_Latn", "",      "",      "ha",  ""),
    ("haw", "Hawaiian",           "ʻŌlelo Hawaiʻi",       "Latn", "haw", "",         "haw",   "",      "haw", ""),
    ("he",  "Hebrew",             "עברית",                "Hebr", "heb", "heb_Hebr", "he",    "",      "he",  ""),
    ("hi",  "Hindi",              "हिन्दी",                 "Deva", "hin", "hin_Deva", "hi",    "hi",    "hi",  ""),
    ("hr",  "Croatian",           "hrvatski",             "Latn", "hrv", "hrv_Latn", "hr",    "",      "hr",  "hr"),
    ("ht",  "Haitian Creole",     "kreyòl ayisyen",       "Latn", "hat", "hat_Latn", "ht",    "",      "ht",  ""),
    ("hu",  "Hungarian",          "magyar",               "Latn", "hun", "hun_Latn", "hu",    "hu",    "hu",  "hu"),
    ("hy",  "Armenian",           "հայերեն",              "Armn", "hye", "hye_Armn", "hy",    "",      "hy",  ""),
    ("ia",  "Interlingua",        "interlingua",          "Latn", "ina", "",         "ia",    "",      "",    ""),
    ("id",  "Indonesian",         "Bahasa Indonesia",     "Latn", "ind", "ind_Latn", "id",    "",      "id",  ""),
    ("ig",  "Igbo",               "Asụsụ Igbo",           "Latn", "ibo", "ibo_Latn", "",      "",      "",    ""),
    ("io",  "Ido",                "Ido",                  "Latn", "ido", "",         "io",    "",      "",    ""),
    ("is",  "Icelandic",          "íslenska",             "Latn", "isl", "isl_Latn", "is",    "",      "is",  ""),
    ("it",  "Italian",            "italiano",             "Latn", "ita", "ita_Latn", "it",    "it",    "it",  "it"),
    ("ja",  "Japanese",           "日本語",                "Jpan", "jpn", "jpn_Jpan", "ja",    "ja",    "ja",  ""),
    ("jv",  "Javanese",           "Basa Jawa",            "Latn", "jav", "jav_Latn", "",      "",      "jw",  ""),
    ("ka",  "Georgian",           "ქართული",              "Geor", "kat", "kat_Geor", "ka",    "",      "ka",  ""),
    ("kg",  "Kongo",              "Kikongo",              "Latn", "kon", "kon_Latn", "",      "",      "",    ""),
    ("ki",  "Kikuyu",             "Gĩkũyũ",               "Latn", "kik", "kik_Latn", "",      "",      "",    ""),
    ("kk",  "Kazakh",             "қазақ тілі",           "Cyrl", "kaz", "kaz_Cyrl", "kk",    "",      "kk",  ""),
    ("kl",  "Kalaallisut",        "kalaallisut",          "Latn", "kal", "",         "kl",    "",      "",    ""),
    ("km",  "Khmer",              "ខ្មែរ",                  "Khmr", "khm", "khm_Khmr", "",      "",      "km",  ""),
    ("kn",  "Kannada",            "ಕನ್ನಡ",                 "Knda", "kan", "kan_Knda", "kn",    "",      "kn",  ""),
    ("ko",  "Korean",             "한국어",                "Kore", "kor", "kor_Hang", "ko",    "ko",    "ko",  ""),
    ("kr",  "Kanuri",             "Kanuri",               "Latn", "kau", "knc_Latn", "",      "",      "",    ""),
    ("ks",  "Kashmiri",           "کٲشُر",                "Arab", "kas", "kas_Arab", "",      "",      "",    ""),
    ("ku",  "Kurdish",            "kurdî",                "Latn", "kur", "kmr_Latn", "ku",    "",      "",    ""),
    ("ky",  "Kyrgyz",             "кыргызча",             "Cyrl", "kir", "kir_Cyrl", "ky",    "",      "",    ""),
    ("la",  "Latin",              "Latina",               "Latn", "lat", "",         "la",    "",      "la",  ""),
    ("lb",  "Luxembourgish",      "Lëtzebuergesch",       "Latn", "ltz", "ltz_Latn", "lb",    "",      "lb",  ""),
    ("lg",  "Ganda",              "Luganda",              "Latn", "lug", "lug_Latn", "",      "",      "",    ""),
    ("li",  "Limburgish",         "Limburgs",             "Latn", "lim", "lim_Latn", "",      "",      "",    ""),
    ("ln",  "Lingala",            "lingála",              "Latn", "lin", "lin_Latn", "",      "",      "ln",  ""),
    ("lo",  "Lao",                "ລາວ",                  "Laoo", "lao", "lao_Laoo", "",      "",      "lo",  ""),
    ("lt",  "Lithuanian",         "lietuvių",             "Latn", "lit", "lit_Latn", "lt",    "",      "lt",  "lt"),
    ("lv",  "Latvian",            "latviešu",             "Latn", "lav", "lvs_Latn", "lv",    "",      "lv",  "lv"),
    ("mg",  "Malagasy",           "Malagasy",             "Latn", "mlg", "plt_Latn", "",      "",      "mg",  ""),
    ("mi",  "Māori",              "te reo Māori",         "Latn", "mri", "mri_Latn", "mi",    "",      "mi",  ""),
    ("mk",  "Macedonian",         "македонски",           "Cyrl", "mkd", "mkd_Cyrl", "mk",    "",      "mk",  ""),
    ("ml",  "Malayalam",          "മലയാളം",               "Mlym", "mal", "mal_Mlym", "ml",    "",      "ml",  ""),
    ("mn",  "Mongolian",          "монгол",               "Cyrl", "mon", "khk_Cyrl", "",      "",      "mn",  ""),
    ("mr",  "Marathi",            "मराठी",                 "Deva", "mar", "mar_Deva", "mr",    "",      "mr",  ""),
    ("ms",  "Malay",              "Bahasa Melayu",        "Latn", "msa", "zsm_Latn", "ms",    "",      "ms",  ""),
    ("mt",  "Maltese",            "Malti",                "Latn", "mlt", "mlt_Latn", "mt",    "",      "mt",  "mt"),
    ("my",  "Burmese",            "မြန်မာ",                 "Mymr", "mya", "mya_Mymr", "my",    "",      "my",  ""),
    ("nb",  "Norwegian Bokmål",   "norsk bokmål",         "Latn", "nob", "nob_Latn", "nb",    "",      "no",  ""),
    ("ne",  "Nepali",             "नेपाली",                 "Deva", "nep", "npi_Deva", "ne",    "",      "ne",  ""),
    ("nl",  "Dutch",              "Nederlands",           "Latn", "nld", "nld_Latn", "nl",    "nl",    "nl",  "nl"),
    ("nn",  "Norwegian Nynorsk",  "norsk nynorsk",        "Latn", "nno", "nno_Latn", "",      "",      "nn",  ""),
    ("ny",  "Nyanja",             "Chichewa",             "Latn", "nya", "nya_Latn", "",      "",      "",    ""),
    ("oc",  "Occitan",            "occitan",              "Latn", "oci", "oci_Latn", "",      "",      "oc",  ""),
    ("om",  "Oromo",              "Oromoo",               "Latn", "orm", "gaz_Latn", "om",    "",      "",    ""),
    ("or",  "Odia",               "ଓଡ଼ିଆ",                 "Orya", "ori", "ory_Orya", "or",    "",      "",    ""),
    ("pa",  "Punjabi",            "ਪੰਜਾਬੀ",                 "Guru", "pan", "pan_Guru", "pa",    "",      "pa",  ""),
    ("pl",  "Polish",             "polski",               "Latn", "pol", "pol_Latn", "pl",    "pl",    "pl",  "pl"),
    ("ps",  "Pashto",             "پښتو",                 "Arab", "pus", "pbt_Arab", "",      "",      "ps",  ""),
    ("pt",  "Portuguese",         "português",            "Latn", "por", "por_Latn", "pt-br", "pt",    "pt",  "pt"),
    ("qu",  "Quechua",            "Runasimi",             "Latn", "que", "quy_Latn", "qu",    "",      "",    ""),
    ("rn",  "Rundi",              "Ikirundi",             "Latn", "run", "run_Latn", "",      "",      "",    ""),
    ("ro",  "Romanian",           "română",               "Latn", "ron", "ron_Latn", "ro",    "",      "ro",  "ro"),
    ("ru",  "Russian",            "русский",              "Cyrl", "rus", "rus_Cyrl", "ru",    "ru",    "ru",  "ru"),
    ("rw",  "Kinyarwanda",        "Ikinyarwanda",         "Latn", "kin", "kin_Latn", "",      "",      "",    ""),
    ("sa",  "Sanskrit",           "संस्कृतम्",                "Deva", "san", "san_Deva", "",      "",      "sa",  ""),
    ("sc",  "Sardinian",          "sardu",                "Latn", "srd", "srd_Latn", "",      "",      "",    ""),
    ("sd",  "Sindhi",             "سنڌي",                 "Arab", "snd", "snd_Arab", "sd",    "",      "sd",  ""),
    ("se",  "Northern Sami",      "davvisámegiella",      "Latn", "sme", "",         "",      "",      "",    ""),
    ("sg",  "Sango",              "Sängö",                "Latn", "sag", "sag_Latn", "",      "",      "",    ""),
    ("si",  "Sinhala",            "සිංහල",                "Sinh", "sin", "sin_Sinh", "si",    "",      "si",  ""),
    ("sk",  "Slovak",             "slovenčina",           "Latn", "slk", "slk_Latn", "sk",    "",      "sk",  "sk"),
    ("sl",  "Slovenian",          "slovenščina",          "Latn", "slv", "slv_Latn", "sl",    "",      "sl",  "sl"),
    ("sm",  "Samoan",             "Gagana Sāmoa",         "Latn", "smo", "smo_Latn", "",      "",      "",    ""),
    ("sn",  "Shona",              "chiShona",             "Latn", "sna", "sna_Latn", "",      "",      "sn",  ""),
    ("so",  "Somali",             "Soomaali",             "Latn", "som", "som_Latn", "",      "",      "so",  ""),
    ("sq",  "Albanian",           "shqip",                "Latn", "sqi", "als_Latn", "sq",    "",      "sq",  ""),
    ("sr",  "Serbian",            "српски",               "Cyrl", "srp", "srp_Cyrl", "sr",    "",      "sr",  ""),
    ("ss",  "Swati",              "siSwati",              "Latn", "ssw", "ssw_Latn", "",      "",      "",    ""),
    ("st",  "Southern Sotho",     "Sesotho",              "Latn", "sot", "sot_Latn", "",      "",      "",    ""),
    ("su",  "Sundanese",          "Basa Sunda",           "Latn", "sun", "sun_Latn", "",      "",      "su",  ""),
    ("sv",  "Swedish",            "svenska",              "Latn", "swe", "swe_Latn", "sv",    "",      "sv",  "sv"),
    ("sw",  "Swahili",            "Kiswahili",            "Latn", "swa", "swh_Latn", "sw",    "",      "sw",  ""),
    ("ta",  "Tamil",              "தமிழ்",                 "Taml", "tam", "tam_Taml", "ta",    "",      "ta",  ""),
    ("te",  "Telugu",             "తెలుగు",                "Telu", "tel", "tel_Telu", "te",    "",      "te",  ""),
    ("tg",  "Tajik",              "тоҷикӣ",               "Cyrl", "tgk", "tgk_Cyrl", "",      "",      "tg",  ""),
    ("th",  "Thai",               "ไทย",                  "Thai", "tha", "tha_Thai", "th",    "",      "th",  ""),
    ("ti",  "Tigrinya",           "ትግርኛ",                 "Ethi", "tir", "tir_Ethi", "",      "",      "",    ""),
    ("tk",  "Turkmen",            "türkmen dili",         "Latn", "tuk", "tuk_Latn", "tk",    "",      "tk",  ""),
    ("tl",  "Tagalog",            "Tagalog",              "Latn", "tgl", "tgl_Latn", "",      "",      "tl",  ""),
    ("tn",  "Tswana",             "Setswana",             "Latn", "tsn", "tsn_Latn", "tn",    "",      "",    ""),
    ("tr",  "Turkish",            "Türkçe",               "Latn", "tur", "tur_Latn", "tr",    "tr",    "tr",  ""),
    ("ts",  "Tsonga",             "Xitsonga",             "Latn", "tso", "tso_Latn", "",      "",      "",    ""),
    ("tt",  "Tatar",              "татар",                "Cyrl", "tat", "tat_Cyrl", "tt",    "",      "tt",  ""),
    ("ug",  "Uyghur",             "ئۇيغۇرچە",             "Arab", "uig", "uig_Arab", "ug",    "",      "",    ""),
    ("uk",  "Ukrainian",          "українська",           "Cyrl", "ukr", "ukr_Cyrl", "uk",    "",      "uk",  "uk"),
    ("ur",  "Urdu",               "اردو",                 "Arab", "urd", "urd_Arab", "ur",    "",      "ur",  ""),
    ("uz",  "Uzbek",              "oʻzbek",               "Latn", "uzb", "uzn_Latn", "uz",    "",      "uz",  ""),
    ("vi",  "Vietnamese",         "Tiếng Việt",           "Latn", "vie", "vie_Latn", "vi",    "",      "vi",  ""),
    ("wo",  "Wolof",              "Wolof",                "Latn", "wol", "wol_Latn", "",      "",      "",    ""),
    ("xh",  "Xhosa",              "isiXhosa",             "Latn", "xho", "xho_Latn", "",      "",      "",    ""),
    ("yi",  "Yiddish",            "ייִדיש",               "Hebr", "yid", "ydd_Hebr", "",      "",      "yi",  ""),
    ("yo",  "Yoruba",             "Èdè Yorùbá",           "Latn", "yor", "yor_Latn", "",      "",      "yo",  ""),
    ("yue", "Cantonese",          "粵語",                  "Hant", "yue", "yue_Hant", "yue",   "",      "yue", ""),
    ("zh",  "Chinese",            "中文",                  "Hans", "zho", "zho_Hans", "cmn",   "zh-cn", "zh",  ""),
    ("zu",  "Zulu",               "isiZulu",              "Latn", "zul", "zul_Latn", "",      "",      "",    ""),
)  # fmt: skip

#: Languages Apertium has language pairs for (its codes are the ISO 639-3 ones).
_APERTIUM_LANGUAGES = frozenset(
    {
        "af", "an", "ar", "be", "bg", "br", "ca", "co", "cs", "cy", "da", "de", "el", "en",
        "eo", "es", "et", "eu", "fa", "fi", "fo", "fr", "ga", "gd", "gl", "he", "hi", "hr",
        "hu", "id", "is", "it", "ja", "kk", "ko", "ky", "lt", "lv", "mk", "ms", "mt", "nb",
        "nl", "nn", "oc", "pl", "pt", "ro", "ru", "sc", "se", "sk", "sl", "sq", "sr", "sv",
        "th", "tr", "tt", "uk", "ur", "uz", "vi", "zh",
    }
)  # fmt: skip
#: Languages whose older Apertium pairs are named with two letters ("en-es.mode").
_APERTIUM_LEGACY = frozenset({"ca", "en", "es", "eu", "fr", "gl", "it", "oc", "pt", "ro"})

#: Other spellings of a language people and engines use: deprecated ISO 639-1 codes,
#: ISO 639-2/B codes, individual languages of a macrolanguage and engine quirks. (The
#: ISO 639-3 code and every engine family's code are recognised without being listed.)
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        # deprecated ISO 639-1
        "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro",
        # Norwegian: "no" means Bokmål in practice (Whisper, NLLB, browsers)
        "no": "nb", "nor": "nb",
        # ISO 639-2/B
        "alb": "sq", "arm": "hy", "baq": "eu", "bur": "my", "chi": "zh", "cze": "cs",
        "dut": "nl", "fre": "fr", "geo": "ka", "ger": "de", "gre": "el", "ice": "is",
        "mac": "mk", "mao": "mi", "may": "ms", "per": "fa", "rum": "ro", "slo": "sk",
        "tib": "bo", "wel": "cy",
        # individual languages and varieties
        "cmn": "zh", "fil": "tl", "twi": "ak", "ekk": "et", "pbu": "ps", "gug": "gn",
        "kng": "kg", "azb": "az", "prs": "fa",
    }
)  # fmt: skip

#: NLLB codes for a region or script that changes the variety: (code, subtag) → NLLB.
_NLLB_VARIANTS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("zh", "hant"): "zho_Hant", ("zh", "tw"): "zho_Hant", ("zh", "hk"): "zho_Hant",
        ("zh", "mo"): "zho_Hant", ("zh", "hans"): "zho_Hans",
        ("az", "arab"): "azb_Arab", ("az", "ir"): "azb_Arab",
        ("fa", "af"): "prs_Arab",
        ("ks", "deva"): "kas_Deva",
        ("kr", "arab"): "knc_Arab",
    }
)  # fmt: skip

_NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def _build() -> dict[str, LanguageInfo]:
    languages: dict[str, LanguageInfo] = {}
    for code, eng, native, script, iso3, nllb, espeak, xtts, whisper, nemo in _TABLE:
        apertium: tuple[str, ...] = ()
        if code in _APERTIUM_LANGUAGES:
            apertium = (iso3, code) if code in _APERTIUM_LEGACY else (iso3,)
        languages[code] = LanguageInfo(
            code=code,
            name=eng,
            native=native,
            script=script,
            rtl=script in _RTL_SCRIPTS,
            iso639_3=iso3,
            nllb=nllb or None,
            apertium=apertium,
            espeak=espeak or None,
            xtts=xtts or None,
            whisper=whisper or None,
            nemo=nemo or None,
        )
    return languages


def _build_indexes(
    languages: Mapping[str, LanguageInfo],
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(family → engine code → code, every accepted spelling → code)."""
    by_family: dict[str, dict[str, str]] = {family: {} for family in ENGINE_FAMILIES}
    spellings: dict[str, str] = {}
    for info in languages.values():
        for family in ENGINE_FAMILIES:
            for family_code in info.apertium if family == "apertium" else (info.code_for(family),):
                if family_code:
                    by_family[family][family_code] = info.code
        # The engines' own spellings name the language too: "cmn", "jw", "zh-cn", "spa".
        names = [info.code, info.iso639_3]
        names += [
            c.split("_")[0].split("-")[0]
            for c in (info.nllb, info.espeak, info.xtts, info.whisper)
            if c
        ]
        for spelling in names:
            spellings.setdefault(spelling.lower(), info.code)
    for (code, _), variant in _NLLB_VARIANTS.items():
        by_family["nllb"].setdefault(variant, code)
        spellings.setdefault(variant.split("_")[0], code)
    for alias, code in _ALIASES.items():
        spellings.setdefault(alias, code)
    return by_family, spellings


_LANGUAGES = _build()
_BY_FAMILY, _INDEX = _build_indexes(_LANGUAGES)


# --- names and codes -------------------------------------------------------------------


def normalize(tag: str, *, strict: bool = True) -> str:
    """The polyvox code (ISO 639-1) of a language tag.

    Accepts ISO 639-1 and 639-3 codes in any case, BCP 47 tags with region or script
    (``en-US``, ``pt_BR``, ``zh-Hant``: the subtags are dropped), NLLB codes
    (``spa_Latn``), deprecated and ISO 639-2/B codes (``iw``, ``ger``) and the codes
    engines use (``cmn``, ``jw``, ``zh-cn``).

    Args:
        tag: The tag to normalise.
        strict: When false, an unknown tag gives its lowercased primary subtag instead of
            an error (for engines that serve languages the registry does not list, such
            as an Apertium pair for Asturian).

    Raises:
        UnsupportedLanguageError: (strict only) the tag names no language polyvox knows.
    """
    text = tag.strip() if isinstance(tag, str) else ""
    if _NLLB_CODE.match(text) and text in _BY_FAMILY["nllb"]:
        return _BY_FAMILY["nllb"][text]
    base = text.lower().replace("_", "-").split("-", 1)[0]
    code = _INDEX.get(base)
    if code is not None:
        return code
    if strict or not base:
        raise UnsupportedLanguageError(
            f"'{tag}' is not an ISO 639-1 language code polyvox knows (like 'en', 'es' or 'pt-BR')"
        )
    return base


def lookup(tag: str) -> LanguageInfo:
    """Everything the registry knows about the language ``tag`` names.

    Raises:
        UnsupportedLanguageError: an unknown tag (see :func:`normalize`).
    """
    return _LANGUAGES[normalize(tag)]


def name(tag: str) -> str:
    """The English name of a language: ``name("es-MX") == "Spanish"``.

    Raises:
        UnsupportedLanguageError: an unknown tag.
    """
    return lookup(tag).name


def display_name(tag: str) -> str:
    """English and native name for menus: ``"Spanish (español)"``.

    Raises:
        UnsupportedLanguageError: an unknown tag.
    """
    return lookup(tag).display_name


def is_auto(tag: str | None) -> bool:
    """Whether a spoken-language setting asks for identification from speech (:data:`AUTO`)."""
    return isinstance(tag, str) and tag.strip().lower() == AUTO


def known_codes() -> tuple[str, ...]:
    """Every language code the registry knows, sorted."""
    return tuple(sorted(_LANGUAGES))


def engine_code(tag: str, family: str) -> str:
    """The code engine ``family`` uses for the language ``tag`` names.

    ``engine_code("zh", "xtts") == "zh-cn"``; ``engine_code("es", "nllb") == "spa_Latn"``
    (for regional scripts see :func:`nllb_code`).

    Raises:
        UnsupportedLanguageError: an unknown tag, or a language the family lacks.
        ValueError: an unknown family.
    """
    info = lookup(tag)
    code = info.code_for(family)
    if code is None:
        raise UnsupportedLanguageError(f"{family} has no code for {info.name} ('{info.code}')")
    return code


def from_engine_code(family: str, code: str) -> str:
    """The polyvox code of an engine family's language code (``"spa"`` in Apertium → ``"es"``).

    Raises:
        UnsupportedLanguageError: the family has no such code in the registry.
        ValueError: an unknown family.
    """
    if family not in ENGINE_FAMILIES:
        raise ValueError(f"unknown engine family {family!r} (known: {', '.join(ENGINE_FAMILIES)})")
    codes = _BY_FAMILY[family]
    found = codes.get(code.strip())
    if found is None and family != "nllb":
        found = codes.get(code.strip().lower())
    if found is None:
        raise UnsupportedLanguageError(f"'{code}' is not a {family} language code polyvox knows")
    return found


def family_codes(family: str) -> dict[str, str]:
    """Polyvox code → the family's code, for every language the family has.

    Raises:
        ValueError: an unknown family.
    """
    out: dict[str, str] = {}
    for code, info in sorted(_LANGUAGES.items()):
        family_code = info.code_for(family)
        if family_code is not None:
            out[code] = family_code
    return out


def nllb_code(tag: str) -> str:
    """The NLLB-200 code for a tag, keeping the variety its region or script names.

    ``"zh-TW"``/``"zh-Hant"`` → ``"zho_Hant"``, ``"fa-AF"`` → ``"prs_Arab"``, ``"pt-BR"``
    → ``"por_Latn"``; an NLLB code (``"zho_Hant"``) is returned unchanged.

    Raises:
        UnsupportedLanguageError: an unknown tag, or a language NLLB-200 lacks.
    """
    text = tag.strip()
    if _NLLB_CODE.match(text):
        return text
    code = normalize(text)
    for subtag in text.lower().replace("_", "-").split("-")[1:]:
        variant = _NLLB_VARIANTS.get((code, subtag))
        if variant is not None:
            return variant
    return engine_code(code, "nllb")


# --- punctuation and script rules ------------------------------------------------------


@dataclass(frozen=True)
class PunctuationRules:
    """How one language punctuates: its marks, casing, questions and opening marks.

    Attributes:
        full_stop: The mark a statement ends with ("." ; "。" in Chinese, "।" in Hindi,
            "" in Thai, which ends sentences with a space).
        question_mark: The mark a question ends with ("?"; "؟" in Arabic script).
        question_open: The mark that opens a question ("¿" in Spanish), else "".
        exclamation_open: The mark that opens an exclamation ("¡" in Spanish), else "".
        sentence_ends: Marks that end a sentence when whitespace (or the end) follows.
        unspaced_sentence_ends: Marks that end a sentence even with no space after them
            (the full-width CJK ones).
        abbreviations: Words (lowercase, no final period) after which "." does not end
            a sentence ("mr", "sra").
        word_fixes: Bare ASR words → how they are written ("i" → "I" in English).
        question_test: Whether bare, lowercase ASR words form a question; None where the
            registry has no rule, so no question mark is ever guessed.
        dotted_i: Whether "i" capitalises to "İ" (Turkish, Azerbaijani).
    """

    full_stop: str = "."
    question_mark: str = "?"
    question_open: str = ""
    exclamation_open: str = ""
    sentence_ends: str = ".!?…"
    unspaced_sentence_ends: str = ""
    abbreviations: frozenset[str] = frozenset()
    word_fixes: Mapping[str, str] = field(default_factory=dict, compare=False)
    question_test: Callable[[Sequence[str]], bool] | None = field(default=None, compare=False)
    dotted_i: bool = False

    @property
    def question_wrap(self) -> tuple[str, str]:
        """What goes before and after a question: ``("¿", "?")`` in Spanish, ``("", "?")``."""
        return self.question_open, self.question_mark

    def is_question(self, words: Sequence[str]) -> bool:
        """Whether bare ASR output (lowercase words, no punctuation) asks a question.

        Deliberately conservative: a wrong "?" changes the intonation TTS gives a
        statement, while a missing one only flattens a question.
        """
        return bool(words) and self.question_test is not None and self.question_test(words)

    def fix_words(self, words: Sequence[str]) -> list[str]:
        """Apply the language's word fixes ("i'm" → "I'm")."""
        return [self.word_fixes.get(word, word) for word in words]

    def capitalize(self, text: str) -> str:
        """Upper-case the first letter (scripts without case are left as they are)."""
        for index, char in enumerate(text):
            if char.isalpha():
                upper = "İ" if char == "i" and self.dotted_i else char.upper()
                return text[:index] + upper + text[index + 1 :]
        return text


# English: a question starts with a contracted wh-word ("what's", "where'd"); with "why",
# "who", "whose" or "whom"; with any wh-word followed by an auxiliary ("where is", "how
# do"); with "how much/many/long/...", "what about/if/time/...", "which one/way/of"; or
# with an auxiliary followed by a subject ("do you", "is it", "can i", "is the ..."; but
# "do"/"have" only with a plural subject, since "do it now" and "have a seat" are
# orders). "had" never starts one ("had he married ..." is an inverted conditional), nor
# do "may"/"might"/"must" or "were" with a singular subject ("were i you"). A trailing
# negative tag ("... isn't it") also asks. Sentence length is not used: long questions
# and short conditionals are both common in speech.
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
_EN_WORDS = MappingProxyType(
    {
        "i": "I", "i'm": "I'm", "i've": "I've", "i'll": "I'll", "i'd": "I'd",
        "mr": "Mr.", "mrs": "Mrs.", "ms": "Ms.", "dr": "Dr.",
    }
)  # fmt: skip


def _is_english_question(words: Sequence[str]) -> bool:
    """English question test (the rules are in the comments above)."""
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if _EN_CONTRACTED_WH.match(first):
        return True
    if first in _EN_WH:
        if first in _EN_WH_ALWAYS or second in _EN_AUXILIARIES:
            # "which is why ..." continues a statement rather than asking.
            return not (first == "which" and second == "is" and list(words[2:3]) == ["why"])
        return second in _EN_WH_SECOND.get(first, ())
    if first in _EN_PLURAL_ONLY_AUXILIARIES:
        return second in _EN_PLURAL_SUBJECTS
    if first in _EN_QUESTION_AUXILIARIES and (second in _EN_SUBJECTS or second in _EN_DETERMINERS):
        return not (first == "were" and second in _EN_SUBJUNCTIVE_WERE)
    # A negative tag at the end: "it's cold isn't it", "you know him don't you".
    return len(words) > 2 and words[-2] in _EN_NEGATIVE_AUXILIARIES and words[-1] in _EN_SUBJECTS


# Spanish: only the accented forms ask; "que", "donde", "cuando", "como" are conjunctions.
_ES_INTERROGATIVES = frozenset(
    {
        "qué", "dónde", "adónde", "cuándo", "quién", "quiénes", "cómo", "cuál", "cuáles",
        "cuánto", "cuánta", "cuántos", "cuántas",
    }
)  # fmt: skip


def _is_spanish_question(words: Sequence[str]) -> bool:
    """Spanish question test: an accented interrogative first ("qué", "por qué", ...)."""
    first = words[0]
    if first in _ES_INTERROGATIVES:
        return True
    return first == "por" and len(words) > 1 and words[1] == "qué"


_DEFAULT_RULES = PunctuationRules()
_CJK = PunctuationRules(full_stop="。", question_mark="？", unspaced_sentence_ends="。！？")
_DANDA = PunctuationRules(full_stop="।", sentence_ends=".!?…।॥")
_ARABIC_SCRIPT = PunctuationRules(question_mark="؟", sentence_ends=".!?…؟")
_ETHIOPIC = PunctuationRules(full_stop="።", sentence_ends=".!?…።፧")
_TURKIC = PunctuationRules(dotted_i=True)
_NO_FULL_STOP = PunctuationRules(full_stop="")
_RULES: Mapping[str, PunctuationRules] = MappingProxyType(
    {
        "en": PunctuationRules(
            abbreviations=frozenset(
                {
                    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g",
                    "i.e", "cf", "approx", "no", "fig", "vol", "ca",
                }
            ),  # fmt: skip
            word_fixes=_EN_WORDS,
            question_test=_is_english_question,
        ),
        "es": PunctuationRules(
            question_open="¿",
            exclamation_open="¡",
            abbreviations=frozenset({"sr", "sra", "srta", "dr", "dra", "sres", "ud", "uds"}),
            question_test=_is_spanish_question,
        ),
        "fr": PunctuationRules(abbreviations=frozenset({"mme", "mlle", "dr"})),
        "de": PunctuationRules(abbreviations=frozenset({"nr", "hr", "fr", "dr", "ca"})),
        "el": PunctuationRules(
            # The Greek question mark looks like ";", which in every other language
            # separates clauses, so it never splits sentences.
            question_mark=";",
        ),
        "zh": _CJK, "ja": _CJK, "yue": _CJK,
        "hi": _DANDA, "bn": _DANDA, "ne": _DANDA, "sa": _DANDA, "as": _DANDA,
        "pa": _DANDA, "or": _DANDA,
        "ar": _ARABIC_SCRIPT, "fa": _ARABIC_SCRIPT, "ps": _ARABIC_SCRIPT,
        "sd": _ARABIC_SCRIPT, "ug": _ARABIC_SCRIPT, "ks": _ARABIC_SCRIPT,
        "ur": PunctuationRules(full_stop="۔", question_mark="؟", sentence_ends=".!?…؟۔"),
        "am": _ETHIOPIC, "ti": _ETHIOPIC,
        "hy": PunctuationRules(full_stop="։", sentence_ends=".!?…։"),
        "my": PunctuationRules(full_stop="။", sentence_ends=".!?…။"),
        "km": PunctuationRules(full_stop="។", sentence_ends=".!?…។"),
        "bo": PunctuationRules(full_stop="།", sentence_ends=".!?…།"),
        "dz": PunctuationRules(full_stop="།", sentence_ends=".!?…།"),
        "th": _NO_FULL_STOP, "lo": _NO_FULL_STOP,
        "tr": _TURKIC, "az": _TURKIC,
    }
)  # fmt: skip

#: Marks that end a sentence in some language when whitespace follows (or the text ends).
SENTENCE_END_MARKS = "".join(
    sorted({mark for rules in (_DEFAULT_RULES, *_RULES.values()) for mark in rules.sentence_ends})
)
#: Marks that end a sentence even when no space follows (full-width CJK marks).
UNSPACED_SENTENCE_END_MARKS = "".join(
    sorted({mark for rules in _RULES.values() for mark in rules.unspaced_sentence_ends})
)


def punctuation_rules(tag: str) -> PunctuationRules:
    """The punctuation rules of a language; the plain Latin ones for unknown tags.

    Unknown tags do not raise: text utilities must work on any text, and the plain rules
    (capital letter, final "." , no question guessing) are harmless.
    """
    try:
        code = normalize(tag)
    except UnsupportedLanguageError:
        return _DEFAULT_RULES
    return _RULES.get(code, _DEFAULT_RULES)


def abbreviations() -> frozenset[str]:
    """Every language's abbreviations (lowercase, no final period), for sentence splitting."""
    return frozenset(word for rules in _RULES.values() for word in rules.abbreviations)


def opening_marks() -> str:
    """Every mark that opens a sentence ("¿¡"): a sentence may start right after an end mark."""
    return "".join(
        sorted({m for r in _RULES.values() for m in r.question_open + r.exclamation_open})
    )


def punctuation_marks() -> frozenset[str]:
    """Every sentence-level mark any language uses (ends, openers, question marks)."""
    marks: set[str] = set(SENTENCE_END_MARKS + UNSPACED_SENTENCE_END_MARKS + opening_marks())
    for rules in (_DEFAULT_RULES, *_RULES.values()):
        marks.update(rules.full_stop + rules.question_mark)
    return frozenset(marks)


def finish_translation(text: str, language: str) -> str:
    """The clean-up machine translation output needs in its target ``language``.

    Today that is the opening marks of languages that have them: Spanish sentences that
    end in "?" or "!" without their "¿"/"¡" get one (see
    :func:`pipeline.text.add_opening_marks`). Other languages' text is returned unchanged,
    as is text in unknown languages.

    Args:
        text: Translated text.
        language: The language it was translated into.
    """
    rules = punctuation_rules(language)
    if not (rules.question_open or rules.exclamation_open) or not text:
        return text
    # Imported here: pipeline.text builds on this registry, not the other way round.
    from pipeline.text import add_opening_marks

    return add_opening_marks(text, rules)


# --- capabilities ----------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageSupport:
    """What a set of loaded engines can do with each language.

    Codes are normalised (``en-US`` → ``en``); codes an engine reports that the registry
    does not know are kept as they are (lowercased), named by their code.

    Attributes:
        recognise: Languages the ASR engine transcribes: what a participant may speak.
        speak: Languages the TTS engine speaks.
        translate: (source, target) pairs the MT engine translates.
    """

    recognise: frozenset[str] = frozenset()
    speak: frozenset[str] = frozenset()
    translate: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_engines(cls, asr: Any, mt: Any, tts: Any) -> LanguageSupport:
        """Read the capabilities of loaded engines.

        Args:
            asr: An :class:`~pipeline.engines.base.ASREngine` (its ``languages``).
            mt: An :class:`~pipeline.engines.base.MTEngine` (its ``pairs()``, the pairs
                ``supports`` accepts; asking ``supports`` for each of NLLB's ~18 000
                pairs would only repeat that work).
            tts: A :class:`~pipeline.engines.base.TTSEngine` (its ``languages``).
        """
        pairs = {(_canonical(source), _canonical(target)) for source, target in mt.pairs()}
        return cls(
            recognise=frozenset(_canonical(code) for code in asr.languages),
            speak=frozenset(_canonical(code) for code in tts.languages),
            translate=frozenset((s, t) for s, t in pairs if s != t),
        )

    def can_recognise(self, tag: str) -> bool:
        """Whether a participant may speak ``tag``."""
        return _canonical(tag) in self.recognise

    def can_speak(self, tag: str) -> bool:
        """Whether TTS speaks ``tag``."""
        return _canonical(tag) in self.speak

    def can_translate(self, source: str, target: str) -> bool:
        """Whether MT translates ``source`` → ``target``."""
        return (_canonical(source), _canonical(target)) in self.translate

    def targets(self, source: str) -> list[str]:
        """Languages speech in ``source`` can be interpreted into: MT reaches them, TTS speaks them."""
        code = _canonical(source)
        return sorted(t for s, t in self.translate if s == code and t in self.speak)

    def hearable(self, spoken: Iterable[str] | None = None) -> list[str]:
        """Languages a listener can hear when the room speaks ``spoken``.

        The spoken languages themselves (heard directly), plus every language MT reaches
        from a recognised spoken language and TTS speaks.

        Args:
            spoken: The languages participants speak; None means every recognised one.
        """
        languages = self.recognise if spoken is None else {_canonical(c) for c in spoken}
        sources = languages & self.recognise
        heard = set(languages)
        heard.update(t for s, t in self.translate if s in sources and t in self.speak)
        return sorted(heard)

    def describe(self) -> list[dict[str, Any]]:
        """Every language any engine handles, for user interfaces, sorted by English name.

        Each entry is ``{"code", "name", "native", "recognise", "speak", "hear"}``:
        ``recognise`` — a participant may speak it; ``speak`` — TTS speaks it; ``hear``
        — a listener can hear it when every recognised language is spoken.
        """
        hear = set(self.hearable())
        codes = self.recognise | self.speak | {c for pair in self.translate for c in pair}
        entries = []
        for code in codes:
            info = _LANGUAGES.get(code)
            entries.append(
                {
                    "code": code,
                    "name": info.name if info else code,
                    "native": info.native if info else code,
                    "recognise": code in self.recognise,
                    "speak": code in self.speak,
                    "hear": code in hear,
                }
            )
        return sorted(entries, key=lambda entry: (entry["name"].casefold(), entry["code"]))


@functools.lru_cache(maxsize=1024)
def _canonical(tag: str) -> str:
    # Cached: an NLLB engine reports ~18 000 pairs of the same ~130 codes.
    return normalize(str(tag), strict=False)
