"""Translation with Meta's NLLB-200 through transformers (the ``gpu``/``cpu`` profiles).

NLLB-200 translates between 200 languages in both directions with one model. Its
tokenizer marks the source language with a language token in front of the input
(``eng_Latn``), and generation is told the target by forcing that language's token as
the first output token (``forced_bos_token_id``). Both are set on *every* call here:
the tokenizer's ``src_lang`` is shared state, so only the engine's batcher thread ever
sets it, right before it tokenizes.

Licence: the NLLB-200 weights are CC-BY-NC-4.0 (non-commercial use only).
"""

from __future__ import annotations

import re
import threading
from itertools import permutations
from typing import Any, ClassVar

from loguru import logger

from pipeline.engines.base import MTEngine
from pipeline.engines.batching import MicroBatcher
from pipeline.engines.device import pick_device
from pipeline.errors import EngineError, EngineUnavailableError, UnsupportedLanguageError
from pipeline.languages import (
    SENTENCE_END_MARKS,
    UNSPACED_SENTENCE_END_MARKS,
    family_codes,
)
from pipeline.languages import nllb_code as registry_nllb_code
from pipeline.models import resolve_model

__all__ = ["NLLB_CODES", "NLLBMTEngine", "nllb_code"]

_INSTALL_HINT = "transformers and torch are not installed: pip install 'polyvox[gpu]'"

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
    English into a Spanish room) are merged into one ``generate`` call by a
    :class:`~pipeline.engines.batching.MicroBatcher`; its single thread is the only one
    that touches the model and tokenizer.

    The output budget grows with the input: ``max_new_tokens = ceil(length_factor × longest
    input in tokens) + extra_tokens``, capped by the model's position limit, so long
    sentences are never cut short (unlike a fixed ``max_length``). Texts longer than the
    model's input window are split at sentence ends and translated piecewise.

    Args:
        model: Hub name or local folder (Hugging Face layout) of an NLLB-200 checkpoint.
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
        dtype: ``auto`` (bfloat16 on GPUs that have it, else float16; float32 on CPU),
            ``float32``, ``float16`` or ``bfloat16``.
        num_beams: Beam width (1 = greedy, the fastest).
        length_factor: Output budget per input token.
        extra_tokens: Output budget added to every text (short inputs, language token).
        max_batch: Most texts in one ``generate`` call.
        batch_window_ms: How long a request waits for others to share its batch.
        generation: Extra keyword arguments for ``generate`` (``no_repeat_ngram_size``,
            ``suppress_tokens``, ...).

    Raises:
        ConfigError: (through the registry) an unknown option.
    """

    name: ClassVar[str] = "nllb"

    def __init__(
        self,
        *,
        model: str = "facebook/nllb-200-distilled-600M",
        device: str = "auto",
        dtype: str = "auto",
        num_beams: int = 1,
        length_factor: float = 2.0,
        extra_tokens: int = 10,
        max_batch: int = 16,
        batch_window_ms: float = 5.0,
        generation: dict[str, Any] | None = None,
    ) -> None:
        if num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, not {num_beams}")
        if length_factor <= 0 or extra_tokens < 0:
            raise ValueError("length_factor must be positive and extra_tokens not negative")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, not {dtype!r}")
        self.model_name = model
        self._device_setting = device
        self._dtype_setting = dtype
        self._num_beams = num_beams
        self._length_factor = length_factor
        self._extra_tokens = extra_tokens
        self._max_batch = max_batch
        self._window_ms = batch_window_ms
        self._generation = dict(generation or {})
        self._load_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._batcher: MicroBatcher[tuple[str, str], str, str] | None = None
        self._known_codes: frozenset[str] | None = None
        self.device: str | None = None
        self.dtype: str | None = None
        #: Longest input (tokens, language token and </s> included) the model accepts.
        self.max_input_tokens: int = 0
        #: Longest output the model can produce (its position limit).
        self.max_output_tokens: int = 0

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer and model onto the device (once; later calls return at once).

        Raises:
            ImportError: transformers/torch are not installed.
            ModelMissingError: the model is not on this machine and cannot be fetched.
            EngineUnavailableError: the checkpoint is not an NLLB-style model.
        """
        with self._load_lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            path = resolve_model(self.model_name, kind="mt")
            device = pick_device(self._device_setting, torch)
            dtype = _pick_dtype(self._dtype_setting, device, torch)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype)
            except (OSError, ValueError, KeyError) as exc:
                raise EngineUnavailableError(
                    f"mt.model '{self.model_name}' could not be loaded as an NLLB model: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from exc
            model.to(device).eval()
            codes = frozenset(
                tok for tok in tokenizer.get_vocab() if _NLLB_CODE.match(tok)
            )
            if not codes:
                raise EngineUnavailableError(
                    f"mt.model '{self.model_name}' has no NLLB language tokens (eng_Latn, ...)"
                )
            positions = int(getattr(model.config, "max_position_embeddings", 1024))
            self.max_input_tokens = min(positions, int(getattr(tokenizer, "model_max_length", positions) or positions))
            # The decoder's start token and the forced language token use positions too.
            self.max_output_tokens = positions - 2
            self._tokenizer, self._known_codes = tokenizer, codes
            self.device, self.dtype = device, str(dtype).removeprefix("torch.")
            self._model = model
            self._batcher = MicroBatcher(
                self._generate_batch,
                max_batch=self._max_batch,
                window_ms=self._window_ms,
                name="nllb-batcher",
            )
            logger.debug(
                "NLLB {} on {} ({}), {} languages", self.model_name, device, self.dtype, len(codes)
            )

    def warmup(self) -> None:
        """Translate one short sentence (English → Spanish where the model has both)."""
        self.load()
        pairs = self.pairs()
        pair = ("en", "es") if ("en", "es") in pairs else (pairs[0] if pairs else None)
        if pair is not None:
            self.translate(["Hello, how are you?"], *pair)

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
