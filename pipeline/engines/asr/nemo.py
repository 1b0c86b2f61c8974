"""Speech recognition with NVIDIA NeMo (the ``gpu``/``cpu`` profiles).

Any NeMo ASR checkpoint works: Parakeet (CTC, RNN-T or TDT), FastConformer hybrid
RNN-T/CTC models, and prompt-conditioned multilingual models. The model setting is a
hub name (``nvidia/parakeet-tdt-0.6b-v2``, fetched into the Hugging Face cache) or a
local ``.nemo`` file (``ASRModel.restore_from``); either way the weights are restored
from the ``.nemo`` archive on this machine, through :func:`pipeline.models.resolve_model`.

Audio never touches the disk: utterances are padded into one batch tensor and run
through the model's own forward and decoding steps (the same ones its ``transcribe()``
uses, minus the temporary manifest and data loader).

Languages:
    A checkpoint does not say which languages it speaks, so the engine works it out
    from the model name (``stt_es_...`` → Spanish, Parakeet v2 → English, Parakeet v3 →
    its 25 European languages), from a prompt dictionary (prompt-conditioned models),
    or takes the ``languages`` option (``--set 'asr.options.languages=[es]'``), which
    always wins. The language passed to ``transcribe`` is checked against that list;
    prompt-conditioned models also receive it as their language prompt, while models
    that detect the language themselves (Parakeet-TDT-0.6B-v3) just transcribe.

Streaming:
    ``open_stream`` gives cache-aware streaming (:mod:`.nemo_streaming`: each chunk
    encoded once, caches carried over, chunks of concurrent speakers batched) for
    checkpoints trained for it, and re-decoding of the growing window since the last cut
    (:class:`~pipeline.engines.base.RedecodingASRStream`, whose partial decodes of
    concurrent speakers share forward passes through the micro-batcher) for offline
    checkpoints, whose attention sees the whole utterance. ``streaming`` picks one.

Licence: NVIDIA's Parakeet and FastConformer checkpoints are CC-BY-4.0.
"""

from __future__ import annotations

import copy
import re
import threading
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
from loguru import logger

from pipeline.audio import mono_float32
from pipeline.engines.asr.nemo_streaming import (
    CacheAwareStream,
    CacheAwareStreamer,
    StepKey,
    cache_aware_capability,
    enable_word_timestamps,
)
from pipeline.engines.base import ASREngine, ASRStream, RedecodingASRStream, Transcript, Word
from pipeline.engines.batching import MicroBatcher
from pipeline.engines.device import pick_device
from pipeline.errors import EngineError, EngineUnavailableError, UnsupportedLanguageError
from pipeline.languages import family_codes, normalize
from pipeline.models import resolve_model

__all__ = ["NeMoASREngine"]

_INSTALL_HINT = "NeMo is not installed: pip install 'polyvox[gpu]' (nemo_toolkit[asr])"

#: Shorter utterances hold no word; the encoder's 8x subsampling also needs a few frames.
_MIN_SECONDS = 0.1
#: Model names → the languages they transcribe; an empty tuple takes the language from
#: the name. The multilingual checkpoints' languages are the registry's NeMo family.
_MODEL_LANGUAGES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"parakeet-tdt-0\.6b-v3|canary-1b-v2", re.I), tuple(family_codes("nemo"))),
    (re.compile(r"parakeet", re.I), ("en",)),
    (re.compile(r"(?:^|[/_-])stt_([a-z]{2,3})(?:_|$)", re.I), ()),  # language from the name
)
_PUNCTUATION = set(".,?!")


class NeMoASREngine(ASREngine):
    """NeMo ASR with cross-participant micro-batching.

    One dedicated thread owns the model (a :class:`MicroBatcher`): ``transcribe`` calls
    from any number of threads queue there, and every call that arrives while the model
    is busy, or within ``batch_window_ms`` of the first, is transcribed in the same
    forward pass. Prompt-conditioned models batch per language.

    Args:
        model: Hub name or local ``.nemo`` path.
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``.
        dtype: Autocast dtype on CUDA: ``auto`` (bfloat16 where supported, else float16),
            ``float16``, ``bfloat16`` or ``float32`` (no autocast). CPU always runs float32.
        languages: ISO 639-1 codes the checkpoint transcribes (see the module doc).
        decoder: For hybrid RNN-T/CTC checkpoints: ``rnnt`` (more accurate, the default)
            or ``ctc`` (faster).
        punctuated: Whether the model writes punctuation and capitals; ``None`` detects it
            from the tokenizer's vocabulary.
        max_batch: Most utterances in one forward pass.
        batch_window_ms: How long the first utterance of a batch waits for company.
        streaming: How ``open_stream`` streams: ``auto`` (cache-aware where the
            checkpoint was trained for it, else buffered), ``cache_aware`` (refuse
            checkpoints that cannot) or ``buffered`` (re-decode the window since the last
            cut, any checkpoint).
        att_context_size: ``[left, right]`` attention context for cache-aware
            checkpoints trained with several (``streaming_multi``: [70, 13] waits ~1 s
            for look-ahead, [70, 6] ~0.5 s, [70, 1] ~0.16 s, [70, 0] ~0.08 s; less
            look-ahead, more errors); ``None`` keeps the checkpoint's default.
        partial_interval_s: Buffered streams: least time between two partial decodes.
        word_timestamps: Give ``Transcript.words`` (word timings from the decoder).
        cuda_graphs: TDT/RNN-T greedy decoding with CUDA graphs on CUDA (NeMo's
            label-looping decoder); ignored, with a log line, on the CPU and for CTC.
        warmup_seconds: Utterance lengths transcribed by :meth:`warmup`.
        warmup_batches: Batch sizes transcribed by :meth:`warmup`.
    """

    name: ClassVar[str] = "nemo"
    sample_rate: ClassVar[int] = 16000
    supports_streaming: ClassVar[bool] = True

    def __init__(
        self,
        *,
        model: str = "nvidia/parakeet-tdt-0.6b-v2",
        device: str = "auto",
        dtype: str = "auto",
        languages: list[str] | None = None,
        decoder: str | None = None,
        punctuated: bool | None = None,
        max_batch: int = 8,
        batch_window_ms: float = 10.0,
        streaming: str = "auto",
        att_context_size: list[int] | None = None,
        partial_interval_s: float = 0.3,
        word_timestamps: bool = True,
        cuda_graphs: bool = True,
        warmup_seconds: list[float] | None = None,
        warmup_batches: list[int] | None = None,
    ) -> None:
        if streaming not in ("auto", "cache_aware", "buffered"):
            raise ValueError(f"streaming must be auto, cache_aware or buffered, not {streaming!r}")
        if decoder not in (None, "rnnt", "ctc"):
            raise ValueError(f"decoder must be rnnt or ctc, not {decoder!r}")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, not {dtype!r}")
        self.model_name = model
        self._device_setting = device
        self._dtype_setting = dtype
        self._decoder = decoder
        self._punctuated_setting = punctuated
        self._max_batch = max_batch
        self._window_ms = batch_window_ms
        self._configured_languages = (
            [normalize(str(x), strict=False) for x in languages] if languages else None
        )
        self._streaming_setting = streaming
        self._att_context_size = list(att_context_size) if att_context_size else None
        self._partial_interval_s = partial_interval_s
        self._word_timestamps = word_timestamps
        self._streamer: CacheAwareStreamer | None = None
        #: How ``open_stream`` streams once loaded: ``cache_aware`` or ``buffered``.
        self.streaming_mode: str | None = None
        self._cuda_graphs_setting = cuda_graphs
        self._warmup_seconds = [float(x) for x in (warmup_seconds or [1.0, 5.0]) if x > 0]
        self._warmup_batches = [int(b) for b in (warmup_batches or [1, min(4, max_batch)]) if b >= 1]
        #: Whether greedy decoding runs with CUDA graphs (known once loaded).
        self.cuda_graphs = False
        # An instance attribute: which languages depends on the checkpoint.
        self.languages = frozenset(  # type: ignore[misc]
            self._configured_languages or _languages_from_name(model) or ("en",)
        )
        self.punctuated = bool(punctuated)
        self._prompts: dict[str, str] = {}
        self._load_lock = threading.Lock()
        self._model: Any = None
        # Keys: a language (whole utterances) or a StepKey (cache-aware stream chunks).
        self._batcher: MicroBatcher[Any, Any, Any] | None = None
        self._autocast: Any = None
        self.device: str | None = None
        #: The decoder in use: ``ctc``, ``rnnt`` or ``tdt``.
        self.decoder_type: str | None = None

    # --- Engine ------------------------------------------------------------------------

    def load(self) -> None:
        """Restore the checkpoint onto the device (once; later calls return at once).

        Raises:
            ImportError: NeMo (or torch) is not installed.
            ModelMissingError: the model is not on this machine and cannot be fetched.
            EngineUnavailableError: the file is not a NeMo ASR checkpoint, or has no
                decoder of the requested kind.
        """
        with self._load_lock:
            if self._model is not None:
                return
            try:
                import torch
                from nemo.collections.asr.models import ASRModel
            except ImportError as exc:
                raise ImportError(_INSTALL_HINT) from exc

            path = resolve_model(self.model_name, kind="asr", allow_patterns=["*.nemo", "*.json", "*.md"])
            nemo_file = _find_nemo_file(path, self.model_name)
            device = pick_device(self._device_setting, torch)
            try:
                model = ASRModel.restore_from(str(nemo_file), map_location=torch.device(device))
            except Exception as exc:  # noqa: BLE001 - NeMo raises anything from a bad archive
                raise EngineUnavailableError(
                    f"asr.model '{self.model_name}' could not be restored as a NeMo ASR model: "
                    f"{_one_line(exc)}"
                ) from exc
            model.eval()
            self._configure_decoder(model)
            if self._word_timestamps:
                try:
                    enable_word_timestamps(model, "ctc" if self.decoder_type == "ctc" else "rnnt")
                except Exception as exc:  # noqa: BLE001 - a decoder without them still transcribes
                    logger.warning("asr.model '{}' gives no word timings: {}", self.model_name, _one_line(exc))
                    self._word_timestamps = False
            self._prompts = _prompt_languages(model)
            if self._configured_languages is None and self._prompts:
                self.languages = frozenset(self._prompts)
            self.punctuated = (
                self._punctuated_setting
                if self._punctuated_setting is not None
                else _writes_punctuation(model)
            )
            self.device = device
            self._autocast = _autocast(self._dtype_setting, device, torch)
            self.cuda_graphs = _configure_gpu_decoding(
                model, device, self.decoder_type or "", self._dtype_setting, self._cuda_graphs_setting
            )
            self._streamer = self._cache_aware_streamer(model, device)
            self.streaming_mode = "cache_aware" if self._streamer is not None else "buffered"
            self._model = model
            self._batcher = MicroBatcher(
                self._run_batch,
                max_batch=self._max_batch,
                window_ms=self._window_ms,
                name="nemo-asr-batcher",
            )
            logger.debug(
                "NeMo {} ({}, {} decoder) on {}; languages {}; punctuated {}",
                self.model_name, type(model).__name__, self.decoder_type, device,
                ",".join(sorted(self.languages)), self.punctuated,
            )

    def warmup(self) -> None:
        """Transcribe faint noise at every warm-up length and batch size.

        Kernels, cuDNN algorithms, CUDA graphs and allocator pools are set up per shape;
        doing it here makes the first utterance of a room as fast as the tenth.
        """
        self.load()
        rng = np.random.default_rng(0)
        language = sorted(self.languages)[0]
        for seconds in self._warmup_seconds:
            for size in self._warmup_batches:
                clips = [
                    (rng.normal(0.0, 30.0, int(self.sample_rate * seconds)).astype(np.int16), self.sample_rate, language)
                    for _ in range(size)
                ]
                self.transcribe_batch(clips)

    def close(self) -> None:
        """Stop the batcher and drop the model; a later call loads it again."""
        with self._load_lock:
            batcher, self._batcher = self._batcher, None
            self._model = None
            self._streamer = None
        if batcher is not None:
            batcher.close()

    # --- ASREngine ---------------------------------------------------------------------

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str) -> Transcript:
        """Transcribe one utterance (batched with concurrent callers' utterances).

        Args:
            pcm: Mono samples, 1-D int16 (or float in [-1, 1]).
            sample_rate: Must be 16000.
            language: ISO 639-1 code; must be one of ``languages``.

        Returns:
            The text as the model writes it; ``punctuated`` tells whether that includes
            punctuation and capitals. ``extra["decoder"]`` names the decoder used.

        Raises:
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: wrong sample rate, shape or dtype (not retryable), or the model
                failed (retryable).
        """
        return self.transcribe_batch([(pcm, sample_rate, language)])[0]

    def open_stream(self, language: str) -> ASRStream:
        """A stream for one participant: cache-aware or buffered (see ``streaming``).

        Raises:
            UnsupportedLanguageError: ``language`` is not in ``languages``.
            EngineError: the engine is closed.
        """
        code = self._check_language(language)
        self.load()
        streamer, batcher = self._streamer, self._batcher
        if batcher is None:
            raise EngineError("the NeMo engine is closed", retryable=False)
        if streamer is not None:
            return CacheAwareStream(streamer, batcher.submit, code, self.punctuated)
        return RedecodingASRStream(self, code, partial_interval_s=self._partial_interval_s)

    def transcribe_batch(self, items: list[tuple[np.ndarray, int, str]]) -> list[Transcript]:
        """Transcribe several utterances in as few forward passes as possible."""
        prepared: list[tuple[int, str, np.ndarray]] = []
        results: list[Transcript | None] = [None] * len(items)
        for index, (pcm, sample_rate, language) in enumerate(items):
            code = self._check_language(language)
            if sample_rate != self.sample_rate:
                raise EngineError(
                    f"NeMo ASR needs {self.sample_rate} Hz audio, got {sample_rate} Hz",
                    retryable=False,
                )
            samples = mono_float32(pcm, "NeMo ASR")
            if samples.size < _MIN_SECONDS * self.sample_rate:
                results[index] = Transcript(text="", language=code, punctuated=self.punctuated)
                continue
            prepared.append((index, code, samples))
        if prepared:
            if self._batcher is None:
                self.load()
            batcher = self._batcher
            if batcher is None:
                raise EngineError("the NeMo engine is closed", retryable=False)
            # Prompt-conditioned models need one language per batch; others batch freely.
            by_key: dict[str, list[tuple[int, np.ndarray]]] = {}
            for index, code, samples in prepared:
                by_key.setdefault(code if self._prompts else "", []).append((index, samples))
            for key, group in by_key.items():
                outputs = batcher.submit(key, [samples for _, samples in group])
                for (index, _), transcript in zip(group, outputs, strict=True):
                    results[index] = transcript
        final: list[Transcript] = []
        for (_, _, language), maybe in zip(items, results, strict=True):
            assert maybe is not None
            transcript = maybe
            final.append(Transcript(
                text=transcript.text,
                language=self._check_language(language),
                punctuated=transcript.punctuated,
                confidence=transcript.confidence,
                extra=dict(transcript.extra),
                words=list(transcript.words),
            ))
        return final

    # --- internals ---------------------------------------------------------------------

    def _check_language(self, language: str) -> str:
        code = normalize(language, strict=False)
        if code not in self.languages:
            raise UnsupportedLanguageError(
                f"asr.model '{self.model_name}' does not transcribe '{language}' "
                f"(it knows: {', '.join(sorted(self.languages))}; "
                f"set asr.options.languages if the checkpoint knows more)"
            )
        return code

    def _configure_decoder(self, model: Any) -> None:
        has_ctc_head = hasattr(model, "ctc_decoder")
        has_rnnt = hasattr(model, "joint")
        if self._decoder == "ctc" and has_rnnt and not has_ctc_head:
            raise EngineUnavailableError(
                f"asr.model '{self.model_name}' has no CTC decoder (asr.options.decoder=ctc)"
            )
        if self._decoder == "rnnt" and not has_rnnt:
            raise EngineUnavailableError(
                f"asr.model '{self.model_name}' has no RNN-T decoder (asr.options.decoder=rnnt)"
            )
        if has_rnnt and has_ctc_head:
            model.change_decoding_strategy(decoder_type=self._decoder or "rnnt", verbose=False)
        if not has_rnnt or self._decoder == "ctc":
            self.decoder_type = "ctc"
        else:
            loss = str(model.cfg.get("loss", {}).get("loss_name", ""))
            self.decoder_type = "tdt" if loss == "tdt" else "rnnt"

    def _cache_aware_streamer(self, model: Any, device: str) -> CacheAwareStreamer | None:
        if self._streaming_setting == "buffered":
            return None
        reason = cache_aware_capability(model)
        if reason is None and self._prompts:
            reason = "it is prompt-conditioned"
        if reason is not None:
            if self._streaming_setting == "cache_aware":
                raise EngineUnavailableError(
                    f"asr.model '{self.model_name}' cannot stream cache-aware: {reason} "
                    f"(set asr.options.streaming=buffered)"
                )
            return None
        assert self.decoder_type is not None
        return CacheAwareStreamer(
            model, device, self.decoder_type, self._autocast, att_context_size=self._att_context_size
        )

    def _run_batch(self, key: Any, items: list[Any]) -> list[Any]:
        """Batcher thread: stream chunks (StepKey) or whole utterances (a language)."""
        if isinstance(key, StepKey):
            streamer = self._streamer
            if streamer is None:
                raise EngineError("the NeMo engine is closed", retryable=False)
            return streamer.run_steps(key, items)  # type: ignore[arg-type]
        return self._transcribe_batch(key, items)

    def _transcribe_batch(self, language: str, batch: list[np.ndarray]) -> list[Transcript]:
        """Batcher thread: one forward pass and decode for ``batch``."""
        import torch

        model = self._model
        lengths = torch.tensor([len(a) for a in batch], dtype=torch.long)
        signal = torch.zeros((len(batch), int(lengths.max())), dtype=torch.float32)
        for row, samples in enumerate(batch):
            signal[row, : len(samples)] = torch.from_numpy(samples)
        config = self._transcribe_config(language)
        try:
            try:
                hypotheses = self._forward(model, signal, lengths, config, torch)
            except RuntimeError as exc:
                if not self.cuda_graphs:
                    raise
                # A decoder that cannot capture or replay its graph still decodes without.
                logger.warning("NeMo decoding with CUDA graphs failed ({}); retrying without", _one_line(exc))
                model.disable_cuda_graphs()
                self.cuda_graphs = False
                hypotheses = self._forward(model, signal, lengths, config, torch)
        except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
            torch.cuda.empty_cache()
            raise EngineError(f"NeMo ran out of GPU memory on {len(batch)} utterances") from exc
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"NeMo failed to transcribe: {_one_line(exc)}") from exc
        if isinstance(hypotheses, tuple):  # (best, n-best) from some decoders
            hypotheses = hypotheses[0]
        transcripts = []
        for hypothesis in hypotheses:
            text = hypothesis if isinstance(hypothesis, str) else getattr(hypothesis, "text", "")
            transcripts.append(Transcript(
                text=" ".join(str(text).split()),
                language=language or "",
                punctuated=self.punctuated,
                extra={"decoder": self.decoder_type, "model": self.model_name, "batch_size": len(batch)},
                words=_words(hypothesis),
            ))
        return transcripts

    def _forward(self, model: Any, signal: Any, lengths: Any, config: Any, torch: Any) -> Any:
        with torch.inference_mode(), self._autocast():
            outputs = model._transcribe_forward((signal.to(self.device), lengths.to(self.device)), config)
            return model._transcribe_output_processing(outputs, config)

    def _transcribe_config(self, language: str) -> Any:
        from nemo.collections.asr.parts.mixins.transcription import TranscribeConfig

        if self._prompts and language:
            from nemo.collections.asr.models.rnnt_bpe_models_prompt import (
                RNNTPromptTranscribeConfig,
            )

            return RNNTPromptTranscribeConfig(
                batch_size=self._max_batch, return_hypotheses=True, verbose=False,
                target_lang=self._prompts[language], timestamps=self._word_timestamps,
            )
        return TranscribeConfig(
            batch_size=self._max_batch, return_hypotheses=True, verbose=False,
            timestamps=self._word_timestamps,
        )


def _words(hypothesis: Any) -> list[Word]:
    """Word timings of a hypothesis decoded with timestamps (empty without)."""
    stamps = getattr(hypothesis, "timestamp", None)
    if not isinstance(stamps, dict):
        return []
    return [
        Word(str(w["word"]), float(w["start"]), float(w["end"]))
        for w in stamps.get("word") or []
        if "start" in w and "end" in w
    ]


def _languages_from_name(model: str) -> tuple[str, ...]:
    for pattern, languages in _MODEL_LANGUAGES:
        match = pattern.search(model)
        if match is None:
            continue
        if languages:
            return languages
        try:
            return (normalize(match.group(1)),)
        except UnsupportedLanguageError:
            return ()  # "stt_xyz_..." names no language: the default applies
    return ()


def _prompt_languages(model: Any) -> dict[str, str]:
    """ISO code → the model's prompt key (``en`` → ``en-US``) for prompt-conditioned models."""
    defaults = model.cfg.get("model_defaults") or {}
    prompts = defaults.get("prompt_dictionary") or {}
    out: dict[str, str] = {}
    for key in prompts:
        try:
            code = normalize(str(key))
        except UnsupportedLanguageError:
            continue
        if code not in out:
            out[code] = str(key)
    return out


def _writes_punctuation(model: Any) -> bool:
    """A PnC model's tokenizer has pieces with punctuation and with capital letters."""
    tokenizer = getattr(model, "tokenizer", None)
    vocab: list[str] = []
    try:
        if tokenizer is not None and hasattr(tokenizer, "vocab"):
            vocab = list(tokenizer.vocab)
        elif hasattr(model, "decoder") and hasattr(model.decoder, "vocabulary"):
            vocab = list(model.decoder.vocabulary)
    except (AttributeError, TypeError):
        return False
    pieces = "".join(str(piece) for piece in vocab)
    return any(ch in _PUNCTUATION for ch in pieces) and any(ch.isupper() for ch in pieces)


def _find_nemo_file(path: Any, model: str) -> Any:
    if path.is_file():
        return path
    found = sorted(path.glob("*.nemo"))
    if not found:
        raise EngineUnavailableError(f"asr.model '{model}': no .nemo file in {path}")
    return found[0]


def _autocast(setting: str, device: str, torch: Any) -> Any:
    """A context-manager factory: fp16/bf16 autocast on CUDA, nothing on CPU.

    NeMo's preprocessors switch autocast off for the mel spectrogram themselves, so the
    numerically delicate part stays float32.
    """
    if not device.startswith("cuda") or setting == "float32":
        return nullcontext
    if setting == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = getattr(torch, setting)
    return lambda: torch.autocast("cuda", dtype=dtype)


def _configure_gpu_decoding(
    model: Any, device: str, decoder_type: str, dtype: str, cuda_graphs: bool
) -> bool:
    """Switch CUDA-graph greedy decoding on or off; whether it is on.

    NeMo 3.0 offers CUDA graphs for greedy batched TDT/RNN-T decoding (the
    label-looping decoder); CTC decoding is a single argmax and needs none.
    """
    if not device.startswith("cuda"):
        if dtype in ("float16", "bfloat16") or cuda_graphs:
            logger.info(
                "NeMo on {}: float32 without CUDA graphs (dtype {} and cuda_graphs apply on CUDA only)",
                device, dtype,
            )
        return False
    if decoder_type not in ("tdt", "rnnt"):
        if cuda_graphs:
            logger.info("NeMo {} decoding has no CUDA-graph variant; decoding without", decoder_type or "this")
        return False
    decoding = getattr(model.cfg, "decoding", None)
    if decoding is None or str(decoding.get("strategy", "")) != "greedy_batch":
        logger.info("NeMo decoding strategy is not greedy_batch: no CUDA graphs")
        return False
    from omegaconf import open_dict

    wanted = copy.deepcopy(decoding)
    with open_dict(wanted):
        if wanted.get("greedy") is None:
            wanted.greedy = {}
        wanted.greedy.use_cuda_graph_decoder = bool(cuda_graphs)
    if hasattr(model, "ctc_decoder"):  # hybrid: keep its RNN-T head
        model.change_decoding_strategy(wanted, decoder_type="rnnt", verbose=False)
    else:
        model.change_decoding_strategy(wanted, verbose=False)
    if not cuda_graphs:
        model.disable_cuda_graphs()
        return False
    model.maybe_enable_cuda_graphs()
    inner = getattr(getattr(model, "decoding", None), "decoding", None)
    # Label-looping decoders (NeMo's default) keep the mode on their computer: full graphs
    # with conditional nodes, or graphs without while loops when cuda-python is missing.
    computer = getattr(inner, "decoding_computer", None)
    if computer is not None:
        mode = getattr(computer, "cuda_graphs_mode", None)
        enabled = mode is not None
    else:
        mode = None
        enabled = bool(getattr(inner, "use_cuda_graph_decoder", False))
    logger.info("NeMo greedy {} decoding with CUDA graphs: {}", decoder_type, mode or ("on" if enabled else "off"))
    return enabled


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
