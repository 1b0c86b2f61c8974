"""Translation with Meta's NLLB-200 (the ``gpu``/``cpu`` profiles), on CTranslate2 or transformers.

NLLB-200 translates between 200 languages in both directions with one model. Its
tokenizer marks the source language with a language token in front of the input
(``eng_Latn``), and generation is told the target by forcing that language's token as
the first output token (``forced_bos_token_id``). Both are set on *every* call here:
the tokenizer's ``src_lang`` is shared state, so only the engine's batcher thread ever
sets it, right before it tokenizes.

Two backends run the same checkpoint (``mt.options.backend``):

- ``ctranslate2`` (the default, so the cpu and gpu profiles' choice: int8 weights are a
  quarter of float32's, and on a 2-core AVX2 CPU it translates 1.5-2.5x as fast as
  transformers float32, ``bench/bench_engines.py --only mt-backends``): the transformers checkpoint is converted once
  with CTranslate2's converter (:func:`pipeline.models.converted_model`: cached beside the
  Hugging Face cache, keyed by the checkpoint's revision and the quantization) and run
  with int8 weights: ``int8_float16`` on CUDA, ``int8`` on the CPU. A folder that already
  holds a CTranslate2 model (``model.bin``) is used as it is; its tokenizer files must be
  in the same folder (conversions made here copy them), or ``tokenizer`` names them.
- ``transformers``: ``generate`` in float32 on the CPU, bfloat16/float16 on CUDA.

Both apply the same language tokens, the same output budget and the same splitting of
long inputs, so the greedy output of a float32 conversion equals transformers'.

Licence: the NLLB-200 weights are CC-BY-NC-4.0 (non-commercial use only).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from itertools import permutations
from pathlib import Path
from typing import Any, ClassVar

from loguru import logger

from pipeline.engines.base import MTEngine
from pipeline.engines.batching import MicroBatcher
from pipeline.engines.device import pick_ct2_device, pick_device
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.languages import (
    SENTENCE_END_MARKS,
    UNSPACED_SENTENCE_END_MARKS,
    family_codes,
)
from pipeline.languages import nllb_code as registry_nllb_code
from pipeline.models import converted_model, resolve_model

__all__ = ["NLLB_CODES", "NLLBMTEngine", "nllb_code"]

_INSTALL_HINT = "transformers and torch are not installed: pip install 'polyvox[gpu]'"
_CT2_HINT = "ctranslate2 is not installed: pip install 'polyvox[gpu]' (ctranslate2)"
_BACKENDS = ("ctranslate2", "transformers")
_CT2_COMPUTE_TYPES = (
    "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
)
#: Files of a transformers checkpoint that the tokenizer needs (copied into conversions).
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "sentencepiece.bpe.model", "added_tokens.json",
)
#: ``generation`` options the CTranslate2 backend understands, and their CT2 names.
_CT2_GENERATION = {
    "repetition_penalty": "repetition_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "length_penalty": "length_penalty",
    "min_new_tokens": "min_decoding_length",
    "suppress_tokens": "suppress_sequences",
}

#: ISO 639-1 → NLLB-200 (FLORES-200) code, from the language registry.
NLLB_CODES: dict[str, str] = family_codes("nllb")
_NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
# Sentence ends, for splitting a text longer than the model's input window.
_SENTENCE_END = re.compile(
    rf"(?<=[{re.escape(SENTENCE_END_MARKS + UNSPACED_SENTENCE_END_MARKS)}])\s+"
)


def nllb_code(language: str) -> str | None:
    """The NLLB code for an ISO 639-1 code or tag (``en``, ``pt-BR``, ``zh-TW``), or None.

    NLLB codes themselves (``zho_Hant``) are returned unchanged; see
    :func:`pipeline.languages.nllb_code`.
    """
    try:
        return registry_nllb_code(language)
    except UnsupportedLanguageError:
        return None


class NLLBMTEngine(MTEngine):
    """NLLB-200 translation, micro-batched across speakers.

    Concurrent ``translate`` calls for the same language pair (two participants speaking
    English into a Spanish room) are merged into one model call by a
    :class:`~pipeline.engines.batching.MicroBatcher`; its single thread is the only one
    that touches the model and tokenizer.

    The output budget grows with the input: ``max_new_tokens = ceil(length_factor × longest
    input in tokens) + extra_tokens``, capped by the model's position limit, so long
    sentences are never cut short (unlike a fixed ``max_length``). Texts longer than the
    model's input window are split at sentence ends and translated piecewise.

    Args:
        model: Hub name or local folder of an NLLB-200 checkpoint (Hugging Face layout),
            or a folder holding a CTranslate2 conversion of one.
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
        backend: ``ctranslate2`` or ``transformers`` (see the module doc).
        dtype: transformers backend: ``auto`` (bfloat16 on GPUs that have it, else
            float16; float32 on CPU), ``float32``, ``float16`` or ``bfloat16``.
        compute_type: ctranslate2 backend: ``auto`` (``int8_float16`` on CUDA, ``int8``
            on the CPU) or any CTranslate2 compute type (``int8``, ``int8_float16``,
            ``float16``, ``float32``, ...). A conversion is stored in this type.
        threads: ctranslate2 backend on the CPU: threads per translation (0: its default).
        cache_dir: Where conversions are kept (default: beside the Hugging Face cache;
            ``POLYVOX_CONVERSION_CACHE`` moves it too).
        tokenizer: Hub name or folder of the tokenizer, for a CTranslate2 folder that
            has none of its own.
        num_beams: Beam width (1 = greedy, the fastest).
        length_factor: Output budget per input token.
        extra_tokens: Output budget added to every text (short inputs, language token).
        max_batch: Most texts in one model call.
        batch_window_ms: How long a request waits for others to share its batch.
        warmup_batches: Batch sizes translated once by :meth:`warmup`.
        generation: Extra keyword arguments for ``generate`` (``no_repeat_ngram_size``,
            ``suppress_tokens``, ...); the ctranslate2 backend takes
            ``repetition_penalty``, ``no_repeat_ngram_size``, ``length_penalty``,
            ``min_new_tokens`` and ``suppress_tokens``.

    Raises:
        ValueError: an option is out of range (the registry reports it as a ConfigError).
    """

    name: ClassVar[str] = "nllb"

    def __init__(
        self,
        *,
        model: str = "facebook/nllb-200-distilled-600M",
        device: str = "auto",
        backend: str = "ctranslate2",
        dtype: str = "auto",
        compute_type: str = "auto",
        threads: int = 0,
        cache_dir: str | None = None,
        tokenizer: str | None = None,
        num_beams: int = 1,
        length_factor: float = 2.0,
        extra_tokens: int = 10,
        max_batch: int = 16,
        batch_window_ms: float = 5.0,
        warmup_batches: list[int] | None = None,
        generation: dict[str, Any] | None = None,
    ) -> None:
        if num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, not {num_beams}")
        if length_factor <= 0 or extra_tokens < 0:
            raise ValueError("length_factor must be positive and extra_tokens not negative")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be ctranslate2 or transformers, not {backend!r}")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, not {dtype!r}")
        if compute_type not in _CT2_COMPUTE_TYPES:
            raise ValueError(
                f"compute_type must be one of {', '.join(_CT2_COMPUTE_TYPES)}, not {compute_type!r}"
            )
        if threads < 0:
            raise ValueError(f"threads must not be negative, not {threads}")
        if backend == "ctranslate2":
            unknown = sorted(set(generation or {}) - set(_CT2_GENERATION))
            if unknown:
                raise ValueError(
                    f"the ctranslate2 backend does not take generation option(s) {', '.join(unknown)} "
                    f"(it takes: {', '.join(_CT2_GENERATION)})"
                )
        self.model_name = model
        self.backend = backend
        self._device_setting = device
        self._dtype_setting = dtype
        self._compute_type_setting = compute_type
        self._threads = threads
        self._cache_dir = cache_dir
        self._tokenizer_setting = tokenizer
        self._num_beams = num_beams
        self._length_factor = length_factor
        self._extra_tokens = extra_tokens
        self._max_batch = max_batch
        self._window_ms = batch_window_ms
        self._warmup_batches = [b for b in (warmup_batches or [1, min(4, max_batch)]) if b >= 1]
        self._generation = dict(generation or {})
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._batcher: MicroBatcher[tuple[str, str], str, str] | None = None
        self._known_codes: frozenset[str] | None = None
        self.device: str | None = None
        #: The precision the model runs in (``float32``, ``bfloat16``, ``int8``, ...).
        self.dtype: str | None = None
        #: The CTranslate2 model folder in use (ctranslate2 backend), once loaded.
        self.converted_path: Path | None = None
        #: Longest input (tokens, language token and </s> included) the model accepts.
        self.max_input_tokens: int = 0
        #: Longest output the model can produce (its position limit).
        self.max_output_tokens: int = 0

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer and model onto the device (once; later calls return at once).

        Raises:
            ImportError: transformers/torch (or ctranslate2) are not installed.
            ModelMissingError: the model is not on this machine and cannot be fetched.
            EngineUnavailableError: the checkpoint is not an NLLB-style model, or its
                conversion failed.
            ConfigError: the compute type is not available on the device.
        """
        with self._load_lock:
            if self._model is not None:
                return
            try:
                from transformers import AutoTokenizer
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            path = resolve_model(self.model_name, kind="mt")
            if self.backend == "ctranslate2":
                model, tokenizer_path, positions = self._load_ctranslate2(path)
            else:
                model, tokenizer_path, positions = self._load_transformers(path)
            try:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise EngineUnavailableError(
                    f"mt.model '{self.model_name}' has no usable NLLB tokenizer in {tokenizer_path}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from exc
            codes = frozenset(
                tok for tok in tokenizer.get_vocab() if _NLLB_CODE.match(tok)
            )
            if not codes:
                raise EngineUnavailableError(
                    f"mt.model '{self.model_name}' has no NLLB language tokens (eng_Latn, ...)"
                )
            self.max_input_tokens = min(positions, int(getattr(tokenizer, "model_max_length", positions) or positions))
            # The decoder's start token and the forced language token use positions too.
            self.max_output_tokens = positions - 2
            self._tokenizer, self._known_codes = tokenizer, codes
            self._model = model
            self._batcher = MicroBatcher(
                self._generate_batch,
                max_batch=self._max_batch,
                window_ms=self._window_ms,
                name="nllb-batcher",
            )
            logger.debug(
                "NLLB {} ({}) on {} ({}), {} languages",
                self.model_name, self.backend, self.device, self.dtype, len(codes),
            )

    def _load_transformers(self, path: Path) -> tuple[Any, Path, int]:
        try:
            import torch
            from transformers import AutoModelForSeq2SeqLM
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        device = pick_device(self._device_setting, torch)
        dtype = _pick_dtype(self._dtype_setting, device, torch)
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineUnavailableError(
                f"mt.model '{self.model_name}' could not be loaded as an NLLB model: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        model.to(device).eval()
        self.device, self.dtype = device, str(dtype).removeprefix("torch.")
        positions = int(getattr(model.config, "max_position_embeddings", 1024))
        return model, path, positions

    def _load_ctranslate2(self, path: Path) -> tuple[Any, Path, int]:
        try:
            import ctranslate2
        except ImportError as exc:
            raise ImportError(_CT2_HINT) from exc
        try:
            device, index = pick_ct2_device(self._device_setting, ctranslate2)
        except ValueError as exc:
            raise ConfigError(f"mt.{exc}") from exc
        compute_type = self._compute_type_setting
        if compute_type == "auto":
            compute_type = "int8_float16" if device == "cuda" else "int8"
        supported = ctranslate2.get_supported_compute_types(device, index)
        if compute_type not in supported:
            raise ConfigError(
                f"mt.options.compute_type {compute_type} is not available on {device} "
                f"(this machine has: {', '.join(sorted(supported))})"
            )
        if _is_ct2_model(path):
            folder = path
        else:
            label = f"mt.model '{self.model_name}'"
            folder = converted_model(
                path,
                runtime="ctranslate2",
                quantization=compute_type,
                convert=lambda source, out: _convert_to_ct2(source, out, compute_type),
                label=label,
                cache_dir=Path(self._cache_dir).expanduser() if self._cache_dir else None,
            )
        tokenizer_path = folder
        if self._tokenizer_setting:
            tokenizer_path = resolve_model(self._tokenizer_setting, kind="mt")
        elif not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise EngineUnavailableError(
                f"mt.model '{self.model_name}' is a CTranslate2 folder without tokenizer files; "
                "copy them there or set mt.options.tokenizer"
            )
        try:
            translator = ctranslate2.Translator(
                str(folder),
                device=device,
                device_index=index,
                compute_type=compute_type,
                intra_threads=self._threads,
            )
        except (RuntimeError, ValueError) as exc:
            raise EngineUnavailableError(
                f"mt.model '{self.model_name}' could not be loaded by CTranslate2 from {folder}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        self.device = device if device == "cpu" else f"cuda:{index}"
        self.dtype = compute_type
        self.converted_path = folder
        return translator, tokenizer_path, _ct2_positions(folder)

    def warmup(self, batches: list[int] | None = None) -> None:
        """Translate a short and a longer sentence at each warm-up batch size.

        The first call of a shape pays for kernel selection and memory pools; doing it
        here makes the first sentence of a room as fast as the tenth.

        Args:
            batches: Batch sizes to warm (default ``warmup_batches``).
        """
        self.load()
        pairs = self.pairs()
        pair = ("en", "es") if ("en", "es") in pairs else (pairs[0] if pairs else None)
        if pair is None:
            return
        texts = [
            "Hello, how are you?",
            "The meeting has been moved to Thursday afternoon, right after lunch, "
            "because the room was booked.",
        ]
        for size in batches or self._warmup_batches:
            for text in texts:
                self.translate([text] * size, *pair)

    def close(self) -> None:
        """Stop the batcher and drop the model; a later call loads it again."""
        with self._load_lock:
            batcher, self._batcher = self._batcher, None
            self._model = self._tokenizer = None
        if batcher is not None:
            batcher.close()

    # --- MTEngine ----------------------------------------------------------------------

    def supports(self, source: str, target: str) -> bool:
        """Whether both languages have an NLLB code (and, once loaded, a token in the model)."""
        try:
            self._codes(source, target)
        except UnsupportedLanguageError:
            return False
        return True

    def pairs(self) -> list[tuple[str, str]]:
        """Every ordered pair of the ISO languages in the table that the model knows."""
        languages = sorted(
            iso for iso, code in NLLB_CODES.items()
            if self._known_codes is None or code in self._known_codes
        )
        return list(permutations(languages, 2))

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text; blank texts give "".

        Raises:
            UnsupportedLanguageError: ``source`` or ``target`` has no NLLB code, or the
                loaded model lacks its language token (the message names it).
            EngineError: generation failed (retryable: out of memory, for one).
        """
        src, tgt = self._codes(source, target)
        if self._batcher is None:
            self.load()
        batcher = self._batcher
        if batcher is None:
            raise EngineError("the NLLB engine is closed", retryable=False)
        results = [""] * len(texts)
        todo = [(i, " ".join(t.split())) for i, t in enumerate(texts) if t and t.strip()]
        if not todo:
            return results
        translated = batcher.submit((src, tgt), [text for _, text in todo])
        for (i, _), out in zip(todo, translated, strict=True):
            results[i] = out
        return results

    def max_new_tokens(self, input_tokens: int) -> int:
        """The output budget for an input of ``input_tokens`` tokens (see the class doc)."""
        budget = int(-(-input_tokens * self._length_factor // 1)) + self._extra_tokens
        limit = self.max_output_tokens or budget
        return max(1, min(budget, limit))

    # --- internals ---------------------------------------------------------------------

    def _codes(self, source: str, target: str) -> tuple[str, str]:
        codes = []
        for role, language in (("source", source), ("target", target)):
            code = nllb_code(language)
            if code is None:
                raise UnsupportedLanguageError(
                    f"NLLB has no {role} language '{language}' in polyvox's table "
                    f"(ISO 639-1 codes such as en, es, fr, de; or an NLLB code like zho_Hant)"
                )
            if self._known_codes is not None and code not in self._known_codes:
                raise UnsupportedLanguageError(
                    f"mt.model '{self.model_name}' has no {role} language '{language}' ({code})"
                )
            codes.append(code)
        return codes[0], codes[1]

    def _generate_batch(self, key: tuple[str, str], texts: list[str]) -> list[str]:
        """Batcher thread: split over-long texts, translate all pieces, join them back."""
        src, tgt = key
        pieces: list[str] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            for piece in self._split(text, src):
                pieces.append(piece)
                owners.append(index)
        outputs: list[list[str]] = [[] for _ in texts]
        for start in range(0, len(pieces), self._max_batch):
            chunk = pieces[start : start + self._max_batch]
            for owner, out in zip(owners[start:], self._generate(chunk, src, tgt), strict=False):
                outputs[owner].append(out)
        return [" ".join(parts) for parts in outputs]

    def _split(self, text: str, src: str) -> list[str]:
        """``text``, or its sentences grouped into pieces that fit the input window."""
        tokenizer = self._tokenizer
        limit = self.max_input_tokens - 2  # the language token and </s>
        if len(tokenizer.tokenize(text)) <= limit:
            return [text]
        pieces: list[str] = []
        current = ""
        for sentence in _SENTENCE_END.split(text):
            candidate = f"{current} {sentence}".strip()
            if current and len(tokenizer.tokenize(candidate)) > limit:
                pieces.append(current)
                candidate = sentence
            current = candidate
        if current:
            pieces.append(current)
        # A single sentence longer than the window is cut at word boundaries.
        out: list[str] = []
        for piece in pieces:
            words = piece.split()
            while words:
                take = len(words)
                while take > 1 and len(tokenizer.tokenize(" ".join(words[:take]))) > limit:
                    take = max(1, take * 3 // 4)
                out.append(" ".join(words[:take]))
                words = words[take:]
        return out

    def _generate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        if self.backend == "ctranslate2":
            return self._generate_ctranslate2(texts, src, tgt)
        return self._generate_transformers(texts, src, tgt)

    def _generate_ctranslate2(self, texts: list[str], src: str, tgt: str) -> list[str]:
        tokenizer, translator = self._tokenizer, self._model
        tokenizer.src_lang = src  # batcher thread only, as in _generate_transformers
        encoded = tokenizer(texts)["input_ids"]
        sources = [tokenizer.convert_ids_to_tokens(ids) for ids in encoded]
        longest = max(len(ids) for ids in encoded)
        options: dict[str, Any] = {}
        for key, value in self._generation.items():
            if key == "suppress_tokens":
                value = [tokenizer.convert_ids_to_tokens([int(t)]) for t in value]
            options[_CT2_GENERATION[key]] = value
        try:
            results = translator.translate_batch(
                sources,
                # The forced target token, exactly like transformers' forced_bos_token_id:
                # CTranslate2 counts it in max_decoding_length as generate counts it in
                # max_new_tokens, so both backends have the same budget.
                target_prefix=[[tgt]] * len(sources),
                beam_size=self._num_beams,
                max_decoding_length=self.max_new_tokens(longest),
                max_batch_size=self._max_batch,
                **options,
            )
        except RuntimeError as exc:
            retryable = "out of memory" in str(exc).lower()
            raise EngineError(f"NLLB (CTranslate2) failed: {exc}", retryable=retryable) from exc
        decoded = [
            tokenizer.decode(
                tokenizer.convert_tokens_to_ids(result.hypotheses[0]), skip_special_tokens=True
            )
            for result in results
        ]
        return [" ".join(text.split()) for text in decoded]

    def _generate_transformers(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        tokenizer, model = self._tokenizer, self._model
        # Only this (batcher) thread uses the tokenizer, so setting the shared src_lang
        # right before encoding cannot race with another request's.
        tokenizer.src_lang = src
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        longest = int(batch["attention_mask"].sum(dim=1).max())
        kwargs: dict[str, Any] = {
            "num_beams": self._num_beams,
            "max_new_tokens": self.max_new_tokens(longest),
            **self._generation,
            # Always last: the target must never come from anywhere else.
            "forced_bos_token_id": tokenizer.convert_tokens_to_ids(tgt),
        }
        try:
            with torch.inference_mode():
                generated = model.generate(**batch, **kwargs)
        except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
            torch.cuda.empty_cache()
            raise EngineError(f"NLLB ran out of GPU memory on {len(texts)} texts") from exc
        except RuntimeError as exc:
            raise EngineError(f"NLLB generation failed: {exc}") from exc
        decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [" ".join(text.split()) for text in decoded]


def _pick_dtype(setting: str, device: str, torch: Any) -> Any:
    if setting != "auto":
        return getattr(torch, setting)
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _is_ct2_model(path: Path) -> bool:
    """Whether ``path`` is a folder holding a CTranslate2 model."""
    return path.is_dir() and (path / "model.bin").is_file()


def _ct2_positions(folder: Path) -> int:
    """The source model's position limit, as recorded at conversion (1024 otherwise)."""
    try:
        info = json.loads((folder / _POSITIONS_FILE).read_text())
        return int(info["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1024


#: Written beside a conversion: what CTranslate2's config.json does not keep.
_POSITIONS_FILE = "polyvox-nllb.json"


def _convert_to_ct2(source: Path, output: Path, quantization: str) -> None:
    """Convert a transformers NLLB folder with CTranslate2's converter, tokenizer included."""
    from ctranslate2.converters import TransformersConverter

    if not (source / "config.json").is_file():
        raise EngineUnavailableError(f"{source} is not a transformers checkpoint (no config.json)")
    config = json.loads((source / "config.json").read_text())
    TransformersConverter(str(source), low_cpu_mem_usage=True).convert(
        str(output), quantization=quantization, force=True
    )
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, output / name)
    (output / _POSITIONS_FILE).write_text(json.dumps({
        "max_position_embeddings": int(config.get("max_position_embeddings", 1024)),
        "model_type": config.get("model_type"),
    }))
