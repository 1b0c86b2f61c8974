"""Text to speech in each speaker's own voice with coqui XTTS v2 (``coqui-tts``).

XTTS clones a voice zero-shot from two tensors computed once from a few seconds of the
speaker: GPT conditioning latents and a speaker embedding (see :mod:`voices.profile`).
Speech is generated sentence by sentence and streamed: the GPT emits audio tokens and
the HiFi-GAN decoder turns them into audio a chunk at a time, the first chunk after
``first_chunk_tokens`` tokens (8 ≈ 0.37 s of speech), later ones every
``stream_chunk_size`` tokens.

Generation runs in :class:`~pipeline.engines.tts.xtts_stream.XTTSStreamDecoder`, not in
coqui's ``inference_stream``: one thread owns the GPT and decodes every speaker's current
sentence in the same forward pass (continuous batching, so simultaneous speakers do not
queue behind each other), keeps each sentence's key/value cache, decodes each chunk's
audio once (coqui re-runs the vocoder over the whole sentence for every chunk), caps
every sentence's length by its text, and runs the GPT in float16 on CUDA. See that
module for the details.

Weights: a checkpoint folder with ``config.json``, ``model.pth``, ``vocab.json`` and
optionally ``speakers_xtts.pth``, given as a local path or as the hub name
``coqui/XTTS-v2`` (resolved by :func:`pipeline.models.resolve_model`: the Hugging Face
cache, or a download unless the hub is off). XTTS v2 is released under the
Coqui Public Model License (non-commercial). Install with ``pip install 'polyvox[xtts]'``.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from loguru import logger

from pipeline.audio import load_audio, resample
from pipeline.engines.base import TTSEngine
from pipeline.engines.device import pick_device
from pipeline.engines.tts.xtts_stream import Sampling, SentenceJob, SpeechRequest, XTTSStreamDecoder
from pipeline.errors import (
    AudioInputError,
    ConfigError,
    EngineError,
    EngineUnavailableError,
    UnsupportedLanguageError,
)
from pipeline.languages import lookup, normalize
from pipeline.models import resolve_model
from pipeline.text import split_sentences
from voices.profile import VoiceLatents, VoiceProfile

__all__ = ["VoiceCacheInfo", "XTTSEngine"]

_INSTALL_HINT = "pip install 'polyvox[xtts]'"
_CHECKPOINT_FILES = ("config.json", "model.pth", "vocab.json")
_SPEAKERS_FILE = "speakers_xtts.pth"
_GPT_SAMPLE_RATE = 22050
_SPEAKER_SAMPLE_RATE = 16000
#: Shortest reference speech accepted by ``condition``.
_MIN_REFERENCE_S = 1.0
#: Neutral English read by espeak-ng when the checkpoint ships no speakers: ~8 s, the
#: length XTTS clones well from.
_NEUTRAL_TEXT = (
    "The weather will be mild today, with a light breeze from the west. "
    "In the afternoon a few clouds may pass over the city, but no rain is expected. "
    "Tomorrow looks much the same."
)
_DTYPES = ("auto", "float32", "float16", "bfloat16")
#: Scripts that say more per character than alphabets: the audio-token cap is scaled up
#: (Han characters are a syllable with meaning; kana and Hangul a syllable each).
_DENSE_SCRIPTS = {"Hans": 3.0, "Hant": 3.0, "Jpan": 2.0, "Kore": 2.0, "Hang": 2.0}


class VoiceCacheInfo(NamedTuple):
    """Statistics of the per-voice tensor cache (as ``functools.lru_cache`` reports)."""

    hits: int
    misses: int
    currsize: int
    maxsize: int


def _import_xtts() -> tuple[Any, Any, Any]:
    """``(torch, Xtts, XttsConfig)``, or an ImportError that names the extra."""
    try:
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts
    except ImportError as exc:
        raise ImportError(f"the xtts TTS engine needs coqui-tts and torch ({exc}): {_INSTALL_HINT}") from exc
    return torch, Xtts, XttsConfig


def _language_code(language: str) -> str:
    """ISO 639-1 for a tag or an XTTS code ("zh-cn" → "zh"); unknown codes kept as they are."""
    return normalize(language, strict=False)


def _fit(sentence: str, limit: int) -> list[str]:
    """Cut a sentence longer than XTTS's per-language limit at commas, then spaces."""
    if len(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    rest = sentence
    while len(rest) > limit:
        cut = max(rest.rfind(", ", 0, limit), rest.rfind("; ", 0, limit))
        cut = cut + 1 if cut > 0 else rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [piece for piece in pieces if piece]


class XTTSEngine(TTSEngine):
    """Voice-cloning, streamed text to speech with XTTS v2; 24 kHz output.

    ``synthesize`` speaks in the voice of a :class:`~voices.profile.VoiceProfile` (made
    by :meth:`condition`), or in the neutral default voice when given ``None``. The
    default voice is the checkpoint's built-in speaker ``default_speaker`` (or its first
    one) when the folder has ``speakers_xtts.pth``, as coqui/XTTS-v2 does; otherwise it is
    cloned at load time from ``default_speaker`` as an audio file, or else from neutral
    English read by espeak-ng.

    Args:
        model: Checkpoint folder, or hub name (``coqui/XTTS-v2``).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16`` or
            ``bfloat16`` (the latter two on CUDA only): the GPT's weights are converted
            to it once, the vocoder runs under autocast. Voice conditioning always runs
            in float32.
        first_chunk_tokens: Audio tokens before a sentence's first chunk (one token ≈
            46 ms of speech); small for an early start.
        stream_chunk_size: Audio tokens per later chunk.
        max_batch: Most sentences (one per concurrent request) decoded together.
        audio_tokens_per_char: The cap on a sentence's audio tokens per character of its
            text (2.5 ≈ 9 characters per second, well below any natural rate; scripts
            such as Chinese get a multiple), plus ``audio_token_margin``; at most the
            model's own limit.
        audio_token_margin: Audio tokens added to every sentence's cap.
        default_speaker: Built-in speaker name, or path to a reference recording, for
            the neutral voice (see above).
        speed: Speaking rate factor (1.0 = the model's own).
        temperature, top_k, top_p, repetition_penalty: Sampling settings; ``None`` takes
            the checkpoint's ``config.json`` values.
        fixed_audio_tokens: Generate exactly this many audio tokens per sentence instead
            of stopping when the model does. For benchmarks and tests with random
            weights, which never choose to stop; leave ``None`` in production.
        voice_cache_size: Voices whose tensors are kept on the device.
        warmup_concurrency: Requests decoded together by :meth:`warmup` after a single
            one (``None``: up to 4 on CUDA, none on the CPU).

    Raises:
        ConfigError: an option is out of range.
    """

    name = "xtts"
    clones_voices = True

    def __init__(
        self,
        *,
        model: str = "coqui/XTTS-v2",
        device: str = "auto",
        dtype: str = "auto",
        first_chunk_tokens: int = 8,
        stream_chunk_size: int = 20,
        max_batch: int = 8,
        audio_tokens_per_char: float = 2.5,
        audio_token_margin: int = 30,
        default_speaker: str | None = None,
        speed: float = 1.0,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        fixed_audio_tokens: int | None = None,
        voice_cache_size: int = 64,
        warmup_concurrency: int | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"xtts dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        if not (device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device)):
            raise ConfigError(f"xtts device must be auto, cpu, cuda or cuda:N, not {device!r}")
        if stream_chunk_size < 1:
            raise ConfigError(f"xtts stream_chunk_size must be at least 1, not {stream_chunk_size}")
        if first_chunk_tokens < 1:
            raise ConfigError(f"xtts first_chunk_tokens must be at least 1, not {first_chunk_tokens}")
        if max_batch < 1:
            raise ConfigError(f"xtts max_batch must be at least 1, not {max_batch}")
        if audio_tokens_per_char <= 0 or audio_token_margin < 0:
            raise ConfigError("xtts audio_tokens_per_char must be positive and audio_token_margin not negative")
        if not 0.25 <= speed <= 4.0:
            raise ConfigError(f"xtts speed must be 0.25-4.0, not {speed}")
        if fixed_audio_tokens is not None and fixed_audio_tokens < 1:
            raise ConfigError(f"xtts fixed_audio_tokens must be at least 1, not {fixed_audio_tokens}")
        if voice_cache_size < 1:
            raise ConfigError(f"xtts voice_cache_size must be at least 1, not {voice_cache_size}")
        if warmup_concurrency is not None and warmup_concurrency < 0:
            raise ConfigError(f"xtts warmup_concurrency must not be negative, not {warmup_concurrency}")
        self._model_name = model
        self._requested_device = device
        self._requested_dtype = dtype
        self._first_chunk_tokens = min(first_chunk_tokens, stream_chunk_size)
        self._chunk_tokens = stream_chunk_size
        self._max_batch = max_batch
        self._tokens_per_char = audio_tokens_per_char
        self._token_margin = audio_token_margin
        self._default_speaker = default_speaker
        self._speed = speed
        self._sampling_settings = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "repetition_penalty": repetition_penalty,
        }
        self._fixed_tokens = fixed_audio_tokens
        self._warmup_concurrency = warmup_concurrency
        self._load_lock = threading.Lock()
        # Held while the conditioning encoders work (generation has its own thread).
        self._model_lock = threading.Lock()
        self._torch: Any = None
        self._model: Any = None
        self._decoder: XTTSStreamDecoder | None = None
        self._device = "cpu"
        self._half: Any = None  # torch dtype of the GPT and vocoder autocast; None = float32
        self._languages: frozenset[str] = frozenset()
        self._char_limits: dict[str, int] = {}
        self._sample_rate = 24000
        self._default_voice: VoiceProfile | None = None
        self._cache: OrderedDict[tuple[str, int], tuple[Any, Any]] = OrderedDict()
        self._cache_size = voice_cache_size
        self._cache_lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    # -- what the engine offers ------------------------------------------------------

    @property
    def languages(self) -> frozenset[str]:  # type: ignore[override]
        """ISO 639-1 codes the checkpoint speaks (``zh`` for its ``zh-cn``); loads the model."""
        self.load()
        return self._languages

    @property
    def sample_rate(self) -> int:
        """24000 Hz for XTTS v2 (the checkpoint's ``output_sample_rate`` once loaded)."""
        return self._sample_rate

    @property
    def device(self) -> str:
        """The device the model runs on (``cpu``, ``cuda:0``, ...), once loaded."""
        return self._device

    @property
    def dtype(self) -> str:
        """The precision synthesis runs in: ``float32``, ``float16`` or ``bfloat16``."""
        return "float32" if self._half is None else str(self._half).removeprefix("torch.")

    @property
    def default_voice(self) -> VoiceProfile:
        """The neutral voice used when ``synthesize`` gets no voice; loads the model."""
        self.load()
        assert self._default_voice is not None
        return self._default_voice

    def cache_info(self) -> VoiceCacheInfo:
        """Hits, misses and size of the per-voice device-tensor cache."""
        with self._cache_lock:
            return VoiceCacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    # -- lifecycle -------------------------------------------------------------------

    def load(self) -> None:
        """Load the checkpoint onto the device and prepare the neutral voice (once).

        Raises:
            ImportError: coqui-tts or torch is not installed (``polyvox[xtts]``).
            EngineUnavailableError: the checkpoint is missing (``ModelMissingError``),
                incomplete or unreadable, or no neutral voice can be made.
            ConfigError: a CUDA device or half precision was asked for without CUDA, or
                ``default_speaker`` names neither a built-in speaker nor a file.
        """
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            torch, xtts_class, config_class = _import_xtts()
            folder = resolve_model(self._model_name, kind="tts")
            if not folder.is_dir():
                raise EngineUnavailableError(f"tts.model '{self._model_name}' is not an XTTS checkpoint folder")
            missing = [name for name in _CHECKPOINT_FILES if not (folder / name).is_file()]
            if missing:
                raise EngineUnavailableError(
                    f"XTTS checkpoint {folder} is incomplete: missing {', '.join(missing)}"
                )
            device, autocast = self._choose_precision(torch)
            try:
                config = config_class()
                config.load_json(str(folder / "config.json"))
                model = xtts_class(config)
                model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
            except Exception as exc:  # noqa: BLE001 - any failure here means an unusable checkpoint
                raise EngineUnavailableError(f"cannot load the XTTS checkpoint in {folder}: {exc}") from exc
            model.to(device)
            _remove_weight_norm(model.hifigan_decoder.waveform_decoder)
            if autocast is not None:
                # The GPT's weights once in half precision (conditioning stays float32).
                gpt = model.gpt
                for part in (gpt.gpt, gpt.text_embedding, gpt.text_pos_embedding, gpt.mel_embedding,
                             gpt.mel_pos_embedding, gpt.final_norm, gpt.mel_head):
                    part.to(autocast)
            self._torch = torch
            self._device = str(model.device)
            self._half = autocast
            self._sample_rate = int(config.model_args.output_sample_rate)
            self._languages = frozenset(_language_code(code) for code in config.languages)
            self._char_limits = dict(model.tokenizer.char_limits)
            self._config = config
            self._default_voice = self._make_default_voice(model)
            chosen = {
                name: getattr(config, name) if value is None else value
                for name, value in self._sampling_settings.items()
            }
            sampling = Sampling(
                temperature=float(chosen["temperature"]),
                top_k=int(chosen["top_k"]),
                top_p=float(chosen["top_p"]),
                repetition_penalty=float(chosen["repetition_penalty"]),
            )
            self._decoder = XTTSStreamDecoder(
                model,
                gpt_dtype=autocast or torch.float32,
                vocoder_autocast=autocast,
                max_batch=self._max_batch,
                first_chunk_tokens=self._first_chunk_tokens,
                chunk_tokens=self._chunk_tokens,
                sampling=sampling,
                speed=self._speed,
            )
            # Published last: a concurrent caller sees a loaded engine only when complete.
            self._model = model
            logger.debug(
                f"XTTS loaded from {folder} on {self._device} ({self.dtype}), "
                f"{len(self._languages)} languages, default voice {self._default_voice.id}"
            )

    def warmup(self) -> None:
        """Speak in the default voice at the shapes production sees, so none is new later.

        One request long enough for the first chunk and (on CUDA) a full one: prefill,
        decode steps, both vocoder window sizes; then, on CUDA, several requests at once
        (the batched decode step).
        """
        self.load()
        language = "en" if "en" in self._languages else min(self._languages)
        tensors = self._voice_tensors(self.default_voice)
        # On CUDA both vocoder window sizes (first chunk, later chunks) are new kernel
        # shapes; the CPU has no such cost, so a first chunk and the tail are enough there.
        tokens = self._first_chunk_tokens + 1
        if self._device.startswith("cuda"):
            tokens += self._chunk_tokens
        started = time.perf_counter()
        for _ in self._generate(["Hello, how are you today?"], language, tensors, tokens=tokens):
            pass
        concurrency = self._warmup_concurrency
        if concurrency is None:
            concurrency = min(4, self._max_batch) if self._device.startswith("cuda") else 0
        decoder = self._decoder
        if concurrency > 1 and decoder is not None:
            # Submitted at once, so they are decoded together.
            requests = [
                decoder.submit(self._request(["Good morning."], language, tensors, tokens=tokens))
                for _ in range(concurrency)
            ]
            for request in requests:
                for _ in request:
                    pass
        logger.debug(f"XTTS warm-up took {time.perf_counter() - started:.2f} s")

    def close(self) -> None:
        """Stop generation, release the model and the cached voice tensors (and CUDA memory)."""
        with self._load_lock, self._model_lock:
            decoder, self._decoder = self._decoder, None
            if decoder is not None:
                decoder.close()
            model, self._model = self._model, None
            with self._cache_lock:
                self._cache.clear()
            if model is not None and self._device.startswith("cuda"):
                del model
                self._torch.cuda.empty_cache()

    # -- voices ----------------------------------------------------------------------

    def condition(self, pcm: np.ndarray, sample_rate: int) -> VoiceLatents:
        """Compute the voice in ``pcm``: GPT conditioning latents and speaker embedding.

        This is what coqui's ``Xtts.get_conditioning_latents`` does for a file, done on
        samples already in memory (no temporary file, no second decoder): the speaker
        embedding from 16 kHz audio, the GPT latents from 22.05 kHz audio in chunks of
        ``gpt_cond_chunk_len`` seconds, using at most ``max_ref_len`` seconds.

        Args:
            pcm: Mono int16 speech, at least 1 s.
            sample_rate: Its sample rate.

        Returns:
            Float32 latents, independent of the device the model runs on.

        Raises:
            AudioInputError: less than 1 s of audio.
            EngineError: the model failed.
        """
        self.load()
        return self._condition(self._require_model(), pcm, sample_rate)

    def _condition(self, model: Any, pcm: np.ndarray, sample_rate: int) -> VoiceLatents:
        torch = self._torch
        config = self._config
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        if pcm.size < _MIN_REFERENCE_S * sample_rate:
            raise AudioInputError(
                f"reference speech is too short ({pcm.size / sample_rate:.2f} s); "
                f"XTTS needs at least {_MIN_REFERENCE_S:g} s"
            )
        pcm = pcm[: int(config.max_ref_len * sample_rate)]

        def tensor(rate: int) -> Any:
            samples = resample(pcm, sample_rate, rate).astype(np.float32) / 32768.0
            if config.sound_norm_refs:
                samples *= 0.75 / max(float(np.abs(samples).max()), 1e-6)
            return torch.from_numpy(samples).unsqueeze(0).to(self._device)

        with self._model_lock:
            try:
                with torch.inference_mode():
                    speaker = model.get_speaker_embedding(tensor(_SPEAKER_SAMPLE_RATE), _SPEAKER_SAMPLE_RATE)
                    gpt = model.get_gpt_cond_latents(
                        tensor(_GPT_SAMPLE_RATE),
                        _GPT_SAMPLE_RATE,
                        length=int(config.gpt_cond_len),
                        chunk_length=int(config.gpt_cond_chunk_len),
                    )
            except RuntimeError as exc:
                raise EngineError(f"xtts could not condition on the reference audio: {exc}") from exc
        return VoiceLatents(
            gpt.detach().float().cpu().numpy(), speaker.detach().float().cpu().numpy()
        )

    def _make_default_voice(self, model: Any) -> VoiceProfile:
        speakers = model.speaker_manager.speakers if model.speaker_manager is not None else {}
        wanted = self._default_speaker
        if (wanted is None and speakers) or (wanted is not None and wanted in speakers):
            name = wanted if wanted is not None else next(iter(speakers))
            entry = speakers[name]
            latents = VoiceLatents(
                entry["gpt_cond_latent"].float().cpu().numpy(),
                entry["speaker_embedding"].float().cpu().numpy(),
            )
            return VoiceProfile("", latents, 0.0, "builtin", id=f"builtin:{name}")
        if wanted is not None:
            path = Path(wanted).expanduser()
            if not path.is_file():
                known = ", ".join(list(speakers)[:5]) or "none in this checkpoint"
                raise ConfigError(
                    f"xtts default_speaker {wanted!r} is neither a built-in speaker "
                    f"({known}) nor an audio file"
                )
            pcm = load_audio(path, sample_rate=_SPEAKER_SAMPLE_RATE)
            origin = f"file:{os.fsdecode(path)}"
        else:
            pcm = self._espeak_reference()
            origin = "espeak"
        latents = self._condition(model, pcm, _SPEAKER_SAMPLE_RATE)
        return VoiceProfile("", latents, pcm.size / _SPEAKER_SAMPLE_RATE, "builtin", id=f"builtin:{origin}")

    @staticmethod
    def _espeak_reference() -> np.ndarray:
        """Neutral English from espeak-ng, at 16 kHz, to clone the default voice from."""
        from pipeline.engines.tts.espeak import EspeakTTSEngine

        espeak = EspeakTTSEngine(rate=150)
        try:
            espeak.load()
            chunks = list(espeak.synthesize(_NEUTRAL_TEXT, "en"))
        except (EngineUnavailableError, EngineError) as exc:
            raise EngineUnavailableError(
                "XTTS needs a neutral default voice: the checkpoint has no "
                f"{_SPEAKERS_FILE} and espeak-ng cannot read one ({exc}); set "
                "tts.options.default_speaker to a reference recording"
            ) from exc
        finally:
            espeak.close()
        return resample(np.concatenate(chunks), espeak.sample_rate, _SPEAKER_SAMPLE_RATE)

    def _voice_tensors(self, voice: VoiceProfile) -> tuple[Any, Any]:
        """The voice's latents on the device, converted once per ``(id, version)``."""
        key = voice.key
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return cached
        model = self._require_model()
        gpt_shape = (1, None, model.gpt.model_dim)
        speaker_shape = (1, model.args.d_vector_dim, 1)
        got = (voice.gpt_cond_latent.shape, voice.speaker_embedding.shape)
        if got[0][0] != 1 or got[0][2] != gpt_shape[2] or got[1] != speaker_shape:
            raise EngineError(
                f"the voice profile of {voice.user_id or 'the default voice'} was made by "
                f"another model (latents {got[0]}, embedding {got[1]}; this checkpoint needs "
                f"(1, n, {gpt_shape[2]}) and {speaker_shape}); enroll again",
                retryable=False,
            )
        torch = self._torch
        tensors = (
            torch.from_numpy(np.array(voice.gpt_cond_latent)).to(self._device),
            torch.from_numpy(np.array(voice.speaker_embedding)).to(self._device),
        )
        with self._cache_lock:
            self._misses += 1
            self._cache[key] = tensors
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return tensors

    # -- speech ----------------------------------------------------------------------

    def synthesize(
        self, text: str, language: str, voice: Any | None = None
    ) -> Iterator[np.ndarray]:
        """Speak ``text`` in ``voice``, yielding int16 chunks at 24 kHz as they are made.

        The language and the voice are checked at once; the returned iterator is lazy
        and generates sentence by sentence (``pipeline.text.split_sentences``, longer
        sentences cut to XTTS's per-language limit) as it is advanced. The model is held
        while a sentence is being generated, so advance the iterator promptly (as
        ``TTSProcessor`` does, in a worker thread) or close it: closing it early stops
        generation and frees the model for other requests.

        Args:
            text: Text to speak; blank text yields nothing.
            language: ISO 639-1 code (a region suffix such as ``"es-MX"`` is ignored).
            voice: A :class:`~voices.profile.VoiceProfile`, or ``None`` for the neutral voice.

        Raises:
            UnsupportedLanguageError: XTTS does not speak ``language``.
            EngineError: the voice profile does not fit this model; (from the iterator)
                the model failed.
        """
        self.load()
        code = _language_code(language)
        if code not in self._languages:
            raise UnsupportedLanguageError(f"xtts does not speak {language!r}")
        if voice is None:
            voice = self.default_voice
        elif not isinstance(voice, VoiceProfile):
            raise EngineError(
                f"xtts speaks in a VoiceProfile, not a {type(voice).__name__}", retryable=False
            )
        tensors = self._voice_tensors(voice)
        limit = self._char_limits.get(code, 250)
        sentences = [piece for sentence in split_sentences(text) for piece in _fit(sentence, limit)]
        return self._generate(sentences, code, tensors)

    def audio_token_cap(self, sentence: str, language: str) -> int:
        """The most audio tokens a sentence may have (see ``audio_tokens_per_char``)."""
        code = _language_code(language)
        try:
            script = lookup(code).script
        except UnsupportedLanguageError:
            script = ""
        density = _DENSE_SCRIPTS.get(script, 1.0)
        cap = math.ceil(self._tokens_per_char * density * len(sentence.strip())) + self._token_margin
        return max(1, cap)

    def _generate(
        self,
        sentences: list[str],
        code: str,
        tensors: tuple[Any, Any],
        *,
        tokens: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Submit the sentences when first advanced; yield their chunks as they come."""
        decoder = self._decoder
        if decoder is None:
            raise EngineError("the xtts engine is closed", retryable=False)
        request = decoder.submit(self._request(sentences, code, tensors, tokens=tokens))
        try:
            yield from request
        finally:
            request.cancel()

    def _request(
        self,
        sentences: list[str],
        code: str,
        tensors: tuple[Any, Any],
        *,
        tokens: int | None = None,
    ) -> SpeechRequest:
        model = self._require_model()
        jobs = []
        for sentence in sentences:
            # coqui's own preparation: stripped, lower case, language-specific cleaning.
            try:
                ids = model.tokenizer.encode(sentence.strip().lower(), lang=code)
            except (RuntimeError, ValueError, KeyError, ImportError) as exc:
                raise EngineError(f"xtts cannot read {sentence[:40]!r} as {code}: {exc}", retryable=False) from exc
            if tokens is not None:
                jobs.append(SentenceJob(list(ids), tokens, fixed=True))
            elif self._fixed_tokens is not None:
                jobs.append(SentenceJob(list(ids), self._fixed_tokens, fixed=True))
            else:
                jobs.append(SentenceJob(list(ids), self.audio_token_cap(sentence, code)))
        return SpeechRequest(jobs, *tensors)

    def _choose_precision(self, torch: Any) -> tuple[str, Any]:
        """The device and autocast dtype (``None`` = float32) for the settings."""
        device = pick_device(self._requested_device, torch)
        dtype = self._requested_dtype
        if dtype == "auto":
            # Half precision on the GPU, where it halves memory traffic; the CPU has no
            # fast float16 kernels, so it stays in float32.
            dtype = "float16" if device.startswith("cuda") else "float32"
        if dtype != "float32" and not device.startswith("cuda"):
            raise ConfigError(f"xtts dtype {dtype} needs a CUDA device; use float32 on the CPU")
        return device, None if dtype == "float32" else getattr(torch, dtype)

    @property
    def decoder(self) -> XTTSStreamDecoder | None:
        """The generation thread's decoder (statistics: forward calls, batch sizes)."""
        return self._decoder

    def _require_model(self) -> Any:
        model = self._model
        if model is None:
            raise EngineError("the xtts engine is closed", retryable=False)
        return model


def _remove_weight_norm(generator: Any) -> None:
    """Fold HiFi-GAN's weight normalisation into plain weights (coqui leaves it on at
    inference, recomputing every weight on every call); the outputs are the same."""
    from torch.nn.utils import parametrize

    for module in generator.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
