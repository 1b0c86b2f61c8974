"""Speech recognition and spoken-language identification with Whisper (faster-whisper).

Whisper transcribes about a hundred languages and tells which one is spoken, so it
serves the languages the NeMo checkpoints lack (``asr.routes``) and identifies speakers'
languages (``languages.speaker: auto``). It runs on CTranslate2 through faster-whisper:
``large-v3-turbo`` on a GPU (float16), ``small`` on a CPU (int8).

Models:
    ``model`` is a faster-whisper size (``small``, ``large-v3-turbo``, ``turbo``, ...:
    :func:`whisper_repository` names the hub repository it comes from), a hub repository
    of a CTranslate2-converted Whisper (``Systran/faster-whisper-medium``), or a local
    folder holding one (``model.bin``, ``config.json``, ``vocabulary.json``,
    ``tokenizer.json``, ``preprocessor_config.json``). Hub models are fetched through
    :func:`pipeline.models.resolve_model` (so ``polyvox models pull`` fetches them ahead
    and ``HF_HUB_OFFLINE=1`` never reaches the network). A transformers checkpoint is
    converted once with ``ct2-transformers-converter --model openai/whisper-small
    --output_dir DIR --copy_files tokenizer.json preprocessor_config.json``.

Decoding:
    Utterances up to 30 s (Whisper's window; every live utterance) are decoded in batches:
    concurrent calls from any number of threads meet in one :class:`MicroBatcher`, and
    each batch is one encoder pass and one ``generate`` call, each utterance with its own
    language token, so utterances in different languages share a batch. Language
    identification batches the same way. Longer recordings go through faster-whisper's
    own long-form ``transcribe`` (seeking window by window). Only the batcher's thread
    touches the model.

    Output is capped at 15 tokens per second of audio (plus 10), which no speech reaches
    and which stops the repetition loops Whisper can fall into on noise; a window Whisper
    finds probably silent (no-speech probability above ``no_speech_threshold`` with an
    average log-probability below ``log_prob_threshold``) gives an empty transcript.

Languages:
    The model's language tokens, mapped to polyvox codes by the registry's Whisper
    family (``jw`` → ``jv``, ``no`` → ``nb``); English-only checkpoints (``small.en``)
    transcribe English alone. ``languages`` narrows the list (a route that should only
    serve Japanese).

Licence: Whisper's weights and code are MIT (OpenAI); faster-whisper and CTranslate2 are MIT.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from loguru import logger

from pipeline.audio import mono_float32
from pipeline.engines.base import ASREngine, Transcript
from pipeline.engines.batching import MicroBatcher
from pipeline.engines.device import pick_ct2_device
from pipeline.errors import (
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.languages import family_codes, from_engine_code, normalize
from pipeline.models import is_local_path, resolve_model

__all__ = ["WhisperASREngine", "whisper_repository"]

_INSTALL_HINT = "faster-whisper is not installed: pip install 'polyvox[gpu]' (faster-whisper)"

#: faster-whisper's model sizes → the hub repositories of their CTranslate2 conversions.
_SIZES = {
    **{
        size: f"Systran/faster-whisper-{size}"
        for size in (
            "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
            "large-v1", "large-v2", "large-v3",
        )
    },
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}  # fmt: skip
#: The files of a CTranslate2 Whisper folder (what a hub download needs).
_MODEL_FILES = ["config.json", "model.bin", "tokenizer.json", "preprocessor_config.json", "vocabulary.*"]
#: Compute types tried in order when ``compute_type`` is ``auto``.
_AUTO_COMPUTE = {"cuda": ("float16", "int8_float16", "float32"), "cpu": ("int8", "float32")}
#: Whisper's window: 30 s of audio, 3000 mel frames.
_WINDOW_SECONDS = 30
#: Shorter utterances hold no word.
_MIN_SECONDS = 0.1
#: Output budget per second of audio (and the allowance on top), see the module doc.
_TOKENS_PER_SECOND = 15
_TOKENS_EXTRA = 10


def whisper_repository(model: str) -> str:
    """The hub repository a Whisper model setting names.

    ``small`` → ``Systran/faster-whisper-small``, ``large-v3-turbo`` →
    ``mobiuslabsgmbh/faster-whisper-large-v3-turbo``; repositories and paths unchanged.
    """
    return _SIZES.get(model.strip(), model.strip())


class WhisperASREngine(ASREngine):
    """Whisper on faster-whisper/CTranslate2, batched across callers; identifies languages.

    Args:
        model: A size (``small``, ``large-v3-turbo``), a hub repository of a CTranslate2
            Whisper, or a local folder holding one.
        device: ``auto`` (CUDA when CTranslate2 sees a GPU, else CPU), ``cpu`` or ``cuda[:N]``.
        compute_type: ``auto`` (``float16`` on CUDA, ``int8`` on the CPU, whichever the
            machine supports first) or any CTranslate2 compute type.
        languages: ISO 639-1 codes to serve, a subset of the model's (default: all).
        beam_size: Beam width (1 = greedy, faster).
        cpu_threads: CTranslate2 threads on the CPU (0: its default).
        max_batch: Most utterances in one decoding call.
        batch_window_ms: How long the first utterance of a batch waits for company.
        no_speech_threshold: See the module doc.
        log_prob_threshold: See the module doc.
    """

    name: ClassVar[str] = "whisper"
    sample_rate: ClassVar[int] = 16000
    detects_language = True

    def __init__(
        self,
        *,
        model: str = "small",
        device: str = "auto",
        compute_type: str = "auto",
        languages: list[str] | None = None,
        beam_size: int = 5,
        cpu_threads: int = 0,
        max_batch: int = 8,
        batch_window_ms: float = 10.0,
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, not {beam_size}")
        self.model_name = model
        self._device_setting = device
        self._compute_setting = compute_type
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        self._max_batch = max_batch
        self._window_ms = batch_window_ms
        self._no_speech_threshold = no_speech_threshold
        self._log_prob_threshold = log_prob_threshold
        self._configured = [normalize(str(x), strict=False) for x in languages] if languages else None
        english_only = model.strip().endswith(".en")
        # An instance attribute: which languages depends on the checkpoint.
        self.languages = frozenset(  # type: ignore[misc]
            self._configured or (("en",) if english_only else family_codes("whisper"))
        )
        self._lock = threading.Lock()
        self._model: Any = None
        self._batcher: MicroBatcher[tuple[str, ...], tuple[np.ndarray, str], Any] | None = None
        #: polyvox code → the model's language code, and back.
        self._codes: dict[str, str] = {}
        self._from_model: dict[str, str] = {}
        self._prompts: dict[str, list[int]] = {}
        self._suppress: list[int] = []
        self._eot = 0
        self.multilingual = not english_only
        self.detects_language = self.multilingual
        self.device: str | None = None
        self.compute_type: str | None = None

    @classmethod
    def hub_repository(cls, model: str) -> str:
        """The hub repository ``polyvox models pull`` fetches for ``model`` (see
        :func:`whisper_repository`)."""
        return whisper_repository(model)

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model onto the device (once; later calls return at once).

        Raises:
            ImportError: faster-whisper is not installed.
            ModelMissingError: a hub model that is not downloaded and cannot be fetched.
            EngineUnavailableError: the folder is not a CTranslate2 Whisper, or the device
                is missing.
            ConfigError: a compute type this machine lacks, or ``languages`` the model lacks.
        """
        with self._lock:
            if self._model is not None:
                return
            try:
                import ctranslate2
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            folder = self._model_folder()
            device, index = pick_ct2_device(self._device_setting, ctranslate2)
            compute_type = self._pick_compute_type(ctranslate2, device, index)
            try:
                model = WhisperModel(
                    str(folder),
                    device=device,
                    device_index=index,
                    compute_type=compute_type,
                    cpu_threads=self._cpu_threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise EngineUnavailableError(
                    f"asr.model '{self.model_name}' could not be loaded by faster-whisper from "
                    f"{folder}: {_one_line(exc)}"
                ) from exc
            self._setup_languages(model)
            self.device = device if device == "cpu" else f"cuda:{index}"
            self.compute_type = compute_type
            self._model = model
            self._batcher = MicroBatcher(
                self._run,
                max_batch=self._max_batch,
                window_ms=self._window_ms,
                name="whisper-asr-batcher",
            )
            logger.debug(
                "Whisper {} on {} ({}); {} languages{}",
                self.model_name, self.device, compute_type, len(self.languages),
                "" if self.multilingual else " (English-only checkpoint)",
            )

    def warmup(self) -> None:
        """Transcribe and identify one second of faint noise (builds kernels and caches)."""
        self.load()
        noise = np.random.default_rng(0).normal(0.0, 30.0, self.sample_rate).astype(np.int16)
        self.transcribe(noise, self.sample_rate, "en" if "en" in self.languages else min(self.languages))
        if self.multilingual:
            self.detect_language(noise, self.sample_rate)

    def close(self) -> None:
        """Stop the batcher and drop the model; a later call loads it again."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
            self._model = None
        if batcher is not None:
            batcher.close()

    # --- ASREngine ---------------------------------------------------------------------

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe one utterance in ``language`` (batched with concurrent callers').

        Returns:
            Punctuated, cased text; ``confidence`` is the mean token probability.

        Raises:
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: wrong sample rate, shape or dtype (not retryable), or the model
                failed (retryable).
        """
        return self.transcribe_batch([(pcm, sample_rate, language)])[0]

    def transcribe_batch(self, items: list[tuple[np.ndarray, int, str]]) -> list[Transcript]:
        """Transcribe several utterances in as few decoding calls as possible."""
        results: list[Transcript | None] = [None] * len(items)
        short: list[tuple[int, np.ndarray, str]] = []
        long: list[tuple[int, np.ndarray, str]] = []
        for index, (pcm, sample_rate, language) in enumerate(items):
            code = self._check_language(language)
            samples = self._samples(pcm, sample_rate)
            if samples.size < _MIN_SECONDS * self.sample_rate:
                results[index] = Transcript(text="", language=code, punctuated=True)
            elif samples.size <= _WINDOW_SECONDS * self.sample_rate:
                short.append((index, samples, code))
            else:
                long.append((index, samples, code))
        batcher = self._ready()
        for key, group in ((("decode",), short), (("long",), long)):
            if not group:
                continue
            outputs = batcher.submit(key, [(samples, self._codes[code]) for _, samples, code in group])
            for (index, _, code), (text, extra) in zip(group, outputs, strict=True):
                confidence = extra.pop("confidence", None)
                results[index] = Transcript(
                    text=text, language=code, punctuated=True, confidence=confidence, extra=extra
                )
        return [result for result in results if result is not None]

    def detect_language(self, pcm: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        """The spoken language of an utterance (its first 30 s), as Whisper tells them apart.

        Returns:
            ``(code, probability)`` for every language of the model, most probable
            first. Codes are the registry's (a model language the registry lacks keeps
            Whisper's code).

        Raises:
            EngineError: bad audio, an English-only checkpoint, or the model failed.
        """
        samples = self._samples(pcm, sample_rate)
        if not self.multilingual:
            raise EngineError(
                f"asr.model '{self.model_name}' is English-only: it cannot identify languages",
                retryable=False,
            )
        if samples.size == 0:
            raise EngineError("no audio to identify the language of", retryable=False)
        (ranking,) = self._ready().submit(("detect",), [(samples, "")])
        return list(ranking)

    # --- internals ---------------------------------------------------------------------

    def _model_folder(self) -> Path:
        name = self.model_name.strip()
        if is_local_path(name):
            folder = resolve_model(name, kind="asr")
        else:
            folder = resolve_model(whisper_repository(name), kind="asr", allow_patterns=_MODEL_FILES)
        if not (folder / "model.bin").is_file():
            raise EngineUnavailableError(
                f"asr.model '{self.model_name}': {folder} is not a CTranslate2 Whisper folder (no "
                "model.bin); convert a transformers checkpoint with `ct2-transformers-converter "
                "--model openai/whisper-small --output_dir DIR --copy_files tokenizer.json "
                "preprocessor_config.json`"
            )
        if not (folder / "tokenizer.json").is_file():
            raise EngineUnavailableError(
                f"asr.model '{self.model_name}': {folder} has no tokenizer.json (copy the "
                "checkpoint's tokenizer.json there)"
            )
        return folder

    def _pick_compute_type(self, ctranslate2: Any, device: str, index: int) -> str:
        supported = set(ctranslate2.get_supported_compute_types(device, index))
        if self._compute_setting != "auto":
            if self._compute_setting not in supported:
                raise ConfigError(
                    f"asr.options.compute_type {self._compute_setting} is not available on "
                    f"{device} (this machine has: {', '.join(sorted(supported))})"
                )
            return self._compute_setting
        for choice in _AUTO_COMPUTE["cuda" if device == "cuda" else "cpu"]:
            if choice in supported:
                return choice
        return "default"

    def _setup_languages(self, model: Any) -> None:
        """Read the model's languages, map them to polyvox codes, build the prompts."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        hf = model.hf_tokenizer
        self.multilingual = bool(model.model.is_multilingual)
        self.detects_language = self.multilingual
        if self.multilingual:
            model_codes = [c for c in model.supported_languages if hf.token_to_id(f"<|{c}|>") is not None]
        else:
            model_codes = ["en"]
        codes: dict[str, str] = {}
        for model_code in model_codes:
            try:
                code = from_engine_code("whisper", model_code)
            except UnsupportedLanguageError:
                code = normalize(model_code, strict=False)
            codes.setdefault(code, model_code)
        if self._configured is not None:
            missing = [c for c in self._configured if c not in codes]
            if missing:
                raise ConfigError(
                    f"asr.options.languages: Whisper model '{self.model_name}' does not transcribe "
                    f"{', '.join(missing)}"
                )
            codes = {c: codes[c] for c in self._configured}
        self._from_model = {model_code: code for code, model_code in codes.items()}
        if self.multilingual:  # identification ranks every language of the model
            for model_code in model_codes:
                self._from_model.setdefault(
                    model_code, _registry_code(model_code)
                )
        self._codes = codes
        self.languages = frozenset(codes)  # type: ignore[misc]
        self._prompts = {}
        for model_code in codes.values():
            tokenizer = Tokenizer(
                hf, self.multilingual, task="transcribe", language=model_code if self.multilingual else None
            )
            self._prompts[model_code] = model.get_prompt(tokenizer, [], without_timestamps=True)
        any_tokenizer = Tokenizer(hf, self.multilingual, task="transcribe", language=model_codes[0])
        self._suppress = list(get_suppressed_tokens(any_tokenizer, [-1]) or [])
        self._eot = any_tokenizer.eot

    def _ready(self) -> MicroBatcher[tuple[str, ...], tuple[np.ndarray, str], Any]:
        if self._batcher is None:
            self.load()
        batcher = self._batcher
        if batcher is None:
            raise EngineError("the Whisper engine is closed", retryable=False)
        return batcher

    def _check_language(self, language: str) -> str:
        code = normalize(language, strict=False)
        if code not in self.languages:
            raise UnsupportedLanguageError(
                f"asr.model '{self.model_name}' does not transcribe '{language}' "
                f"(it knows {len(self.languages)} languages: {', '.join(sorted(self.languages))})"
            )
        if self._model is None:
            self.load()
        return code

    def _samples(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate != self.sample_rate:
            raise EngineError(
                f"Whisper needs {self.sample_rate} Hz audio, got {sample_rate} Hz", retryable=False
            )
        return mono_float32(pcm, "Whisper")

    # --- the batcher's thread ----------------------------------------------------------

    def _run(self, key: tuple[str, ...], batch: list[tuple[np.ndarray, str]]) -> list[Any]:
        try:
            if key[0] == "detect":
                return self._detect_batch([samples for samples, _ in batch])
            if key[0] == "long":
                return [self._transcribe_long(samples, code) for samples, code in batch]
            return self._decode_batch(batch)
        except EngineError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"Whisper failed: {_one_line(exc)}") from exc

    def _encode(self, batch: list[np.ndarray]) -> Any:
        """One encoder pass over up to 30 s of each utterance."""
        from faster_whisper.audio import pad_or_trim

        extractor = self._model.feature_extractor
        frames = extractor.nb_max_frames
        features = np.stack(
            [pad_or_trim(extractor(samples[: extractor.n_samples]), frames) for samples in batch]
        ).astype(np.float32)
        return self._model.encode(features)

    def _decode_batch(self, batch: list[tuple[np.ndarray, str]]) -> list[tuple[str, dict[str, Any]]]:
        model = self._model
        encoded = self._encode([samples for samples, _ in batch])
        prompts = [list(self._prompts[code]) for _, code in batch]
        # One length limit per call: the longest utterance's budget; each result is then
        # cut to its own, so a batch gives what each utterance alone would.
        budgets = [self._token_budget(samples) for samples, _ in batch]
        max_length = min(model.max_length, max(len(p) for p in prompts) + max(budgets))
        results = model.model.generate(
            encoded,
            prompts,
            beam_size=self._beam_size,
            max_length=max_length,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            return_scores=True,
            return_no_speech_prob=True,
        )
        outputs = []
        for result, budget in zip(results, budgets, strict=True):
            generated = result.sequences_ids[0]
            tokens = [t for t in generated[:budget] if t < self._eot]
            # CTranslate2's score is the length-normalised log-probability (penalty 1).
            avg_logprob = result.scores[0] * len(generated) / (len(generated) + 1)
            no_speech = float(result.no_speech_prob)
            silent = no_speech > self._no_speech_threshold and avg_logprob < self._log_prob_threshold
            text = "" if silent else " ".join(model.hf_tokenizer.decode(tokens).split())
            outputs.append((text, {
                "confidence": float(min(1.0, math.exp(avg_logprob))),
                "avg_logprob": float(avg_logprob),
                "no_speech_prob": no_speech,
                "model": self.model_name,
                "batch_size": len(batch),
            }))  # fmt: skip
        return outputs

    def _token_budget(self, samples: np.ndarray) -> int:
        return _TOKENS_EXTRA + math.ceil(samples.size / self.sample_rate * _TOKENS_PER_SECOND)

    def _transcribe_long(self, samples: np.ndarray, code: str) -> tuple[str, dict[str, Any]]:
        """faster-whisper's long-form transcription, window by window (over 30 s)."""
        segments, _info = self._model.transcribe(
            samples,
            language=code if self.multilingual else None,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            no_speech_threshold=self._no_speech_threshold,
            log_prob_threshold=self._log_prob_threshold,
            vad_filter=False,
        )
        # The segments are a lazy generator: consume it here, in the batcher's thread.
        parts = [segment.text.strip() for segment in segments]
        text = " ".join(" ".join(parts).split())
        return text, {"model": self.model_name, "batch_size": 1, "long_form": True}

    def _detect_batch(self, batch: list[np.ndarray]) -> list[list[tuple[str, float]]]:
        encoded = self._encode(batch)
        rankings = []
        for tokens in self._model.model.detect_language(encoded):
            ranking: dict[str, float] = {}
            for token, probability in tokens:
                model_code = token[2:-2]  # "<|es|>" → "es"
                code = self._from_model.get(model_code) or _registry_code(model_code)
                ranking[code] = ranking.get(code, 0.0) + float(probability)
            rankings.append(sorted(ranking.items(), key=lambda item: (-item[1], item[0])))
        return rankings


def _registry_code(model_code: str) -> str:
    try:
        return from_engine_code("whisper", model_code)
    except UnsupportedLanguageError:
        return normalize(model_code, strict=False)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
