"""XTTS speech generation for many speakers at once: batched GPT decoding, exact streaming.

:class:`XTTSStreamDecoder` replaces coqui's ``Xtts.inference_stream`` for
:class:`~pipeline.engines.tts.xtts.XTTSEngine`. What coqui-tts 0.28 does, and what is done
here instead:

- **Vocoder work per chunk.** coqui keeps the GPT's key/value cache across a sentence
  (its GPT is not re-run), but for every chunk it runs the HiFi-GAN decoder again on
  *all* the latents of the sentence so far and cross-fades 1024 samples, so vocoder
  work grows with the square of the sentence length and each chunk's audio still
  differs from the sentence decoded at once. Here each chunk decodes only its own frames
  plus :data:`VOCODER_CONTEXT_FRAMES` of context on each side (more than the decoder's
  receptive field, 12.6 frames each way), and audio is emitted only where every frame
  it depends on is final: the concatenated chunks equal the whole sentence decoded at
  once, to float rounding, and vocoder work grows linearly.
- **Chunk schedule.** The first chunk is decoded after ``first_chunk_tokens`` audio
  tokens (8 ≈ 0.37 s of speech, ~0.15 s of it playable at once because the last frames
  wait for their right context), later ones every ``chunk_tokens``.
- **Concurrent speakers.** coqui's model keeps the prompt in the module, so one
  instance speaks one sentence at a time and simultaneous speakers queue behind each
  other. Here one thread owns the GPT and decodes every active request in the same
  forward pass (continuous batching): a request joins the running batch at the next
  step (its prompt is prefilled alone, then it decodes with the others), leaves it when
  its sentence ends, and its next sentence joins again. On a GPU a decode step is
  memory-bound, so eight speakers cost little more than one; that is why this batches
  rather than running replicas (8 × the weights) or CUDA streams (which would still
  launch one small kernel sequence per speaker).
- **Precision.** The GPT runs in its own dtype (float16 on CUDA by the engine's choice:
  the weights are converted once, not cast by autocast at every step); the vocoder runs
  under autocast.
- **A cap per sentence**: ``max_tokens`` for each sentence (the engine derives it from
  the text's length), so a model that never emits its stop token cannot talk forever.

The GPT forward is written here against the GPT-2 blocks coqui builds (``ln_1``,
``attn.c_attn``/``c_proj``, ``ln_2``, ``mlp``; positions are XTTS's own learned
embeddings, GPT-2's are unused), with one key/value cache of fixed slots that grows in
length as needed. Sampling repeats transformers' processors in their order (repetition
penalty, stop-token suppression while a forced length is not reached, temperature,
top-k, top-p), including coqui's quirk of penalising the placeholder ids of its prompt.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger

from pipeline.errors import EngineError

__all__ = ["VOCODER_CONTEXT_FRAMES", "Sampling", "SentenceJob", "SpeechRequest", "XTTSStreamDecoder"]

#: Frames of vocoder input decoded on each side of a chunk's own frames. XTTS's
#: HiFi-GAN lets one input frame change the output 12.6 frames away on either side.
VOCODER_CONTEXT_FRAMES = 16
#: Placeholder id coqui fills its prompt with; ``generate`` sees it as generated text,
#: so the repetition penalty applies to it (and to the start-of-audio token).
_PROMPT_FILLER_ID = 1
_END = object()


@dataclass(frozen=True)
class Sampling:
    """How audio tokens are drawn (XTTS v2's ``config.json`` has the production values).

    Attributes:
        temperature: Softmax temperature; 0 picks the most likely token (greedy).
        top_k: Keep the k most likely tokens (0: all).
        top_p: Keep the smallest set of tokens whose probability reaches p (1: all).
        repetition_penalty: Divides (multiplies, when negative) the logits of tokens
            already in the sequence.
    """

    temperature: float = 0.75
    top_k: int = 50
    top_p: float = 0.85
    repetition_penalty: float = 5.0


@dataclass
class SentenceJob:
    """One sentence to speak.

    Attributes:
        text_tokens: XTTS text token ids (language token included), without start/stop.
        max_tokens: The most audio tokens to generate.
        fixed: Generate exactly ``max_tokens`` (the stop token is suppressed until then):
            for benchmarks and tests with random weights.
    """

    text_tokens: list[int]
    max_tokens: int
    fixed: bool = False


@dataclass
class SpeechRequest:
    """One ``synthesize`` call: sentences spoken in one voice, one after another.

    Iterate it (in the consumer's thread) for int16 chunks; :meth:`cancel` (or closing
    the iterator) frees its place in the batch at the next step.

    Attributes:
        sentences: What to say.
        cond_latent: GPT conditioning latents, ``(1, n, model_dim)`` on the device.
        speaker: Speaker embedding, ``(1, d, 1)`` on the device.
        codes: The audio tokens generated for each sentence so far (stats, tests).
        vocoder_calls: Per vocoder call: ``(tokens generated, frames decoded, frames emitted)``.
    """

    sentences: list[SentenceJob]
    cond_latent: Any
    speaker: Any
    codes: list[list[int]] = field(default_factory=list)
    vocoder_calls: list[tuple[int, int, int]] = field(default_factory=list)
    _chunks: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Stop generating; chunks not yet read are dropped."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                item = self._chunks.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()


class _Slot:
    """One row of the batch: where a request's sentence stands."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.request: SpeechRequest | None = None
        self.sentence = 0
        self.job: SentenceJob | None = None
        self.needs_prefill = False
        self.count = 0  # audio tokens generated in this sentence
        self.write = 0  # next key/value index (= positions in the cache)
        self.last = 0  # the last token, the next step's input
        self.latents: Any = None  # (max_tokens, D) on the device
        self.emitted = 0  # vocoder frames already sent
        self.next_chunk = 0  # token count at which the next chunk is decoded

    @property
    def decoding(self) -> bool:
        return self.request is not None and not self.needs_prefill


class _KVCache:
    """Keys and values of every slot: ``(layers, slots, heads, length, head_dim)``, grown on demand."""

    def __init__(self, layers: int, heads: int, head_dim: int, dtype: Any, device: Any, torch: Any) -> None:
        self._shape = (layers, heads, head_dim)
        self._dtype, self._device, self._torch = dtype, device, torch
        self.keys: Any = None
        self.values: Any = None
        self.slots = 0
        self.length = 0

    def ensure(self, slots: int, length: int) -> None:
        if slots <= self.slots and length <= self.length:
            return
        new_slots = max(slots, self.slots)
        new_length = max(length, min(2 * self.length, length + 512), 64)
        layers, heads, head_dim = self._shape
        shape = (layers, new_slots, heads, new_length, head_dim)
        keys = self._torch.zeros(shape, dtype=self._dtype, device=self._device)
        values = self._torch.zeros(shape, dtype=self._dtype, device=self._device)
        if self.keys is not None:
            keys[:, : self.slots, :, : self.length] = self.keys
            values[:, : self.slots, :, : self.length] = self.values
        self.keys, self.values = keys, values
        self.slots, self.length = new_slots, new_length

    def clear(self) -> None:
        self.keys = self.values = None
        self.slots = self.length = 0


class XTTSStreamDecoder:
    """Generates speech for every submitted request on one thread, batched (module doc).

    Args:
        model: A loaded coqui ``Xtts`` (in eval mode, on its device).
        gpt_dtype: The torch dtype the GPT's weights are in.
        vocoder_autocast: Autocast dtype for the HiFi-GAN decoder on CUDA (``None``: off).
        max_batch: Most requests decoded together; more wait for a free place.
        first_chunk_tokens: Audio tokens before the first chunk of a sentence.
        chunk_tokens: Audio tokens per later chunk.
        sampling: Token sampling settings.
        speed: Speaking rate (1.0: the model's own); applied to the latents as coqui does.
        name: Names the thread.
    """

    def __init__(
        self,
        model: Any,
        *,
        gpt_dtype: Any,
        vocoder_autocast: Any = None,
        max_batch: int = 8,
        first_chunk_tokens: int = 8,
        chunk_tokens: int = 20,
        sampling: Sampling | None = None,
        speed: float = 1.0,
        name: str = "xtts-decoder",
    ) -> None:
        import torch
        import torch.nn.functional as functional

        if max_batch < 1 or first_chunk_tokens < 1 or chunk_tokens < 1:
            raise ValueError("max_batch, first_chunk_tokens and chunk_tokens must be at least 1")
        self._torch, self._functional = torch, functional
        gpt = model.gpt
        transformer = gpt.gpt
        self._blocks = list(transformer.h)
        attention = self._blocks[0].attn
        if (
            not getattr(attention, "scale_attn_weights", True)
            or getattr(attention, "scale_attn_by_inverse_layer_idx", False)
            or getattr(attention, "is_cross_attention", False)
        ):
            raise EngineError("this XTTS checkpoint's GPT uses an attention variant polyvox does not run", retryable=False)
        self._ln_f = transformer.ln_f
        self._final_norm = gpt.final_norm
        self._mel_head = gpt.mel_head
        self._mel_embedding = gpt.mel_embedding
        self._mel_positions = gpt.mel_pos_embedding.emb
        self._text_embedding = gpt.text_embedding
        self._text_positions = gpt.text_pos_embedding.emb
        self._start_text, self._stop_text = int(gpt.start_text_token), int(gpt.stop_text_token)
        self._start_audio, self._stop_audio = int(gpt.start_audio_token), int(gpt.stop_audio_token)
        self._vocab = int(gpt.mel_head.out_features)
        self.model_dim = int(gpt.model_dim)
        self._heads = int(gpt.heads)
        self._head_dim = self.model_dim // self._heads
        #: The most audio tokens one sentence may have (the GPT's position table).
        self.max_audio_tokens = int(gpt.max_gen_mel_tokens)
        #: The most text tokens one sentence may have.
        self.max_text_tokens = int(gpt.max_text_tokens) - 2
        hifigan = model.hifigan_decoder
        self._generator = hifigan.waveform_decoder
        self._frame_scales = [float(hifigan.ar_mel_length_compression / hifigan.output_hop_length)]
        if hifigan.output_sample_rate != hifigan.input_sample_rate:
            self._frame_scales.append(float(hifigan.output_sample_rate / hifigan.input_sample_rate))
        self._length_scale = 1.0 / max(speed, 0.05)
        self._hop = int(np.prod([int(np.ravel(up.stride)[0]) for up in self._generator.ups]))
        self._device = next(gpt.parameters()).device
        self._gpt_dtype = gpt_dtype
        self._vocoder_autocast = vocoder_autocast
        self._max_batch = max_batch
        self._first_chunk = first_chunk_tokens
        self._chunk = chunk_tokens
        self._sampling = sampling or Sampling()
        self._cache = _KVCache(len(self._blocks), self._heads, self._head_dim, gpt_dtype, self._device, torch)
        self._seen = torch.zeros((0, self._vocab), dtype=torch.bool, device=self._device)
        self._slots = [_Slot(i) for i in range(max_batch)]
        self._pending: deque[SpeechRequest] = deque()
        self._wake = threading.Condition()
        self._closed = False
        #: Forward passes of the GPT (prefills + decode steps), for tests and benchmarks.
        self.gpt_forward_calls = 0
        #: Positions the GPT computed, summed over rows (each token once when nothing is redone).
        self.gpt_positions = 0
        #: Requests decoding in each recent decode step (stats).
        self.step_sizes: deque[int] = deque(maxlen=10_000)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the callers' side ------------------------------------------------------------

    def submit(self, request: SpeechRequest) -> SpeechRequest:
        """Queue ``request``; iterate it for its audio chunks.

        Raises:
            EngineError: the decoder is closed.
        """
        for job in request.sentences:
            if len(job.text_tokens) > self.max_text_tokens:
                raise EngineError(
                    f"xtts can speak at most {self.max_text_tokens} text tokens at once, "
                    f"not {len(job.text_tokens)}",
                    retryable=False,
                )
            job.max_tokens = max(1, min(job.max_tokens, self.max_audio_tokens))
        with self._wake:
            if self._closed:
                raise EngineError("the xtts engine is closed", retryable=False)
            if not request.sentences:
                request._chunks.put(_END)
                return request
            self._pending.append(request)
            self._wake.notify()
        return request

    def close(self) -> None:
        """Stop the thread; requests still running or waiting get an EngineError."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # -- the decoder thread -------------------------------------------------------------

    def _run(self) -> None:
        torch = self._torch
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._closed and not self._pending and not any(
                        slot.request is not None for slot in self._slots
                    ):
                        self._wake.wait()
                    if self._closed:
                        break
                    self._admit()
                try:
                    self._iteration()
                except Exception as exc:  # noqa: BLE001 - handed to every active request
                    self._fail_all(exc)
        self._shutdown()

    def _admit(self) -> None:
        """Give waiting requests the free slots (lowest first, keeping the batch short)."""
        for slot in self._slots:
            if not self._pending:
                return
            if slot.request is None:
                request = self._pending.popleft()
                if request.cancelled:
                    continue
                slot.request, slot.sentence = request, 0
                self._start_sentence(slot)

    def _start_sentence(self, slot: _Slot) -> None:
        assert slot.request is not None
        slot.job = slot.request.sentences[slot.sentence]
        slot.needs_prefill = True
        slot.count = slot.emitted = 0
        slot.next_chunk = self._first_chunk
        slot.latents = self._torch.empty(
            (slot.job.max_tokens, self.model_dim), dtype=self._gpt_dtype, device=self._device
        )
        slot.request.codes.append([])

    def _iteration(self) -> None:
        """One step: decode every running row, prefill the new ones, sample, emit chunks."""
        torch = self._torch
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled:
                self._release(slot)
        decoding = [slot for slot in self._slots if slot.decoding]
        fresh: list[tuple[_Slot, Any, Any]] = []  # (slot, latent row, logits row)
        if decoding:
            # Before the prefills: idle rows of the step write a placeholder at index 0
            # of their slot, which a prefill later in this iteration overwrites.
            latents, logits = self._decode_step(decoding)
            fresh += [(slot, latents[slot.index], logits[slot.index]) for slot in decoding]
        for slot in self._slots:
            if slot.request is not None and slot.needs_prefill:
                latent, logit = self._prefill(slot)
                fresh.append((slot, latent, logit))
        if not fresh:
            return
        tokens = self._sample(
            torch.stack([logit for _, _, logit in fresh]),
            [slot for slot, _, _ in fresh],
        ).tolist()
        for (slot, latent, _), token in zip(fresh, tokens, strict=True):
            self._advance(slot, latent, int(token))

    def _prefill(self, slot: _Slot) -> tuple[Any, Any]:
        """Run the sentence's prompt through the GPT into the slot's cache."""
        torch = self._torch
        assert slot.request is not None and slot.job is not None
        device = self._device
        text = torch.tensor(
            [self._start_text, *slot.job.text_tokens, self._stop_text], dtype=torch.long, device=device
        )
        text_emb = self._text_embedding(text) + self._text_positions.weight[: text.numel()]
        start = self._mel_embedding.weight[self._start_audio] + self._mel_positions.weight[0]
        cond = slot.request.cond_latent.to(device=device, dtype=self._gpt_dtype)[0]
        x = torch.cat([cond, text_emb.to(self._gpt_dtype), start.to(self._gpt_dtype)[None]], dim=0)[None]
        positions = x.shape[1]
        self._cache.ensure(slot.index + 1, positions + slot.job.max_tokens + 1)
        self._ensure_seen(slot.index + 1)
        keys, values = self._cache.keys, self._cache.values
        for layer, block in enumerate(self._blocks):
            q, k, v = self._qkv(block, x)
            keys[layer, slot.index, :, :positions] = k[0]
            values[layer, slot.index, :, :positions] = v[0]
            attended = self._functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = self._block_rest(block, x, attended)
        latent = self._final_norm(self._ln_f(x[:, -1]))
        self.gpt_forward_calls += 1
        self.gpt_positions += positions
        slot.write = positions
        slot.needs_prefill = False
        seen = self._seen[slot.index]
        seen.zero_()
        seen[[_PROMPT_FILLER_ID, self._start_audio]] = True
        return latent[0], self._mel_head(latent)[0]

    def _decode_step(self, decoding: list[_Slot]) -> tuple[Any, Any]:
        """One token for every decoding slot, in one forward pass over rows ``0..hi``."""
        torch = self._torch
        device = self._device
        rows = max(slot.index for slot in decoding) + 1
        tokens = [0] * rows
        positions = [0] * rows
        writes = [0] * rows
        for slot in decoding:
            tokens[slot.index], positions[slot.index], writes[slot.index] = slot.last, slot.count, slot.write
        token_t = torch.tensor(tokens, dtype=torch.long, device=device)
        write_t = torch.tensor(writes, dtype=torch.long, device=device)
        row_t = torch.arange(rows, device=device)
        x = self._mel_embedding(token_t) + self._mel_positions(torch.tensor(positions, device=device))
        x = x.to(self._gpt_dtype)[:, None]
        span = max(writes) + 1
        self._cache.ensure(rows, span)
        mask = (torch.arange(span, device=device)[None, :] <= write_t[:, None])[:, None, None, :]
        keys, values = self._cache.keys, self._cache.values
        for layer, block in enumerate(self._blocks):
            q, k, v = self._qkv(block, x)
            keys[layer, row_t, :, write_t] = k[:, :, 0]
            values[layer, row_t, :, write_t] = v[:, :, 0]
            attended = self._functional.scaled_dot_product_attention(
                q, keys[layer, :rows, :, :span], values[layer, :rows, :, :span], attn_mask=mask
            )
            x = self._block_rest(block, x, attended)
        latents = self._final_norm(self._ln_f(x[:, 0]))
        self.gpt_forward_calls += 1
        self.gpt_positions += len(decoding)
        self.step_sizes.append(len(decoding))
        for slot in decoding:
            slot.write += 1
        return latents, self._mel_head(latents)

    def _qkv(self, block: Any, x: Any) -> tuple[Any, Any, Any]:
        batch, length, _ = x.shape
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.model_dim, dim=2)
        shape = (batch, length, self._heads, self._head_dim)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )

    def _block_rest(self, block: Any, x: Any, attended: Any) -> Any:
        batch, _, length, _ = attended.shape
        x = x + block.attn.c_proj(attended.transpose(1, 2).reshape(batch, length, self.model_dim))
        return x + block.mlp(block.ln_2(x))

    def _ensure_seen(self, slots: int) -> None:
        if self._seen.shape[0] < slots:
            grown = self._torch.zeros((slots, self._vocab), dtype=self._torch.bool, device=self._device)
            grown[: self._seen.shape[0]] = self._seen
            self._seen = grown

    def _sample(self, logits: Any, slots: list[_Slot]) -> Any:
        """transformers' processors, in their order, for every row at once."""
        torch = self._torch
        settings = self._sampling
        scores = logits.float()
        index = torch.tensor([slot.index for slot in slots], device=self._device)
        if settings.repetition_penalty != 1.0:
            penalised = torch.where(
                scores < 0, scores * settings.repetition_penalty, scores / settings.repetition_penalty
            )
            scores = torch.where(self._seen[index], penalised, scores)
        forced = [slot.job is not None and slot.job.fixed and slot.count + 1 < slot.job.max_tokens for slot in slots]
        if any(forced):
            rows = torch.tensor(forced, device=self._device)
            scores[:, self._stop_audio] = scores[:, self._stop_audio].masked_fill(rows, -math.inf)
        if settings.temperature <= 0:
            return scores.argmax(dim=-1)
        scores = scores / settings.temperature
        if 0 < settings.top_k < scores.shape[-1]:
            kth = torch.topk(scores, settings.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if settings.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= (1 - settings.top_p)
            remove[:, -1] = False  # always keep the most likely token
            scores = scores.masked_fill(remove.scatter(1, order, remove), -math.inf)
        return torch.multinomial(scores.softmax(dim=-1), num_samples=1)[:, 0]

    def _advance(self, slot: _Slot, latent: Any, token: int) -> None:
        """Take the sampled token: store its latent, emit a chunk when due, end sentences."""
        assert slot.request is not None and slot.job is not None
        slot.latents[slot.count] = latent
        slot.count += 1
        slot.request.codes[-1].append(token)
        # As in coqui, the latent that predicted the stop token is part of the speech.
        finished = token == self._stop_audio or slot.count >= slot.job.max_tokens
        if finished:
            self._emit(slot, final=True)
            slot.sentence += 1
            if slot.sentence < len(slot.request.sentences):
                self._start_sentence(slot)
            else:
                slot.request._chunks.put(_END)
                self._release(slot)
            return
        self._seen[slot.index, token] = True
        slot.last = token
        if slot.count >= slot.next_chunk:
            self._emit(slot, final=False)
            slot.next_chunk += self._chunk

    # -- vocoder ------------------------------------------------------------------------

    def _emit(self, slot: _Slot, *, final: bool) -> None:
        """Decode the slot's frames that are final and not yet sent; queue them as int16."""
        assert slot.request is not None
        torch, functional = self._torch, self._functional
        count = slot.count
        frames = slot.latents[:count].float().t()[None]  # (1, D, tokens)
        total = stable = count
        scales = ([self._length_scale] if self._length_scale != 1.0 else []) + self._frame_scales
        for scale in scales:
            frames = functional.interpolate(frames, scale_factor=[scale], mode="linear")
            total, stable = frames.shape[-1], _stable_outputs(stable, scale, frames.shape[-1])
        end = total if final else stable - VOCODER_CONTEXT_FRAMES
        start = slot.emitted
        if end <= start:
            slot.request.vocoder_calls.append((count, 0, 0))
            return
        low = max(0, start - VOCODER_CONTEXT_FRAMES)
        high = total if final else stable
        context = (
            torch.autocast("cuda", dtype=self._vocoder_autocast)
            if self._vocoder_autocast is not None
            else torch.autocast("cpu", enabled=False)
        )
        with context:
            wav = self._generator(frames[:, :, low:high], g=slot.request.speaker)
        samples = wav[0, 0, (start - low) * self._hop : (end - low) * self._hop]
        pcm = (samples.float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).cpu().numpy()
        slot.emitted = end
        slot.request.vocoder_calls.append((count, high - low, end - start))
        slot.request._chunks.put(pcm)

    # -- bookkeeping --------------------------------------------------------------------

    def _release(self, slot: _Slot) -> None:
        slot.request = slot.job = None
        slot.latents = None
        slot.needs_prefill = False

    def _fail_all(self, exc: BaseException) -> None:
        torch = self._torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):  # type: ignore[attr-defined]
            torch.cuda.empty_cache()
            error = EngineError("xtts ran out of GPU memory")
        elif isinstance(exc, EngineError):
            error = exc
        else:
            error = EngineError(f"xtts failed: {exc}")
        logger.warning("xtts decoder step failed for {} request(s): {}", self._active(), exc)
        for slot in self._slots:
            if slot.request is not None:
                slot.request._chunks.put(error)
                self._release(slot)
        self._cache.clear()

    def _active(self) -> int:
        return sum(slot.request is not None for slot in self._slots)

    def _shutdown(self) -> None:
        error = EngineError("the xtts engine is closed", retryable=False)
        for slot in self._slots:
            if slot.request is not None:
                slot.request._chunks.put(error)
                self._release(slot)
        with self._wake:
            while self._pending:
                self._pending.popleft()._chunks.put(error)
        self._cache.clear()


def _stable_outputs(stable_inputs: int, scale: float, outputs: int) -> int:
    """How many outputs of a linear ``interpolate`` cannot change as more inputs arrive.

    PyTorch maps output ``k`` to source ``(k + 0.5) / scale - 0.5`` (``align_corners``
    off, ``scale_factor`` given), clamped to the inputs: outputs whose source lies at
    or before the last final input never change; later ones are clamped to the current
    last input and will.
    """
    if stable_inputs <= 0:
        return 0
    last = (stable_inputs - 0.5) * scale - 0.5  # the highest k with source <= stable_inputs - 1
    return max(0, min(outputs, math.floor(last - 1e-6) + 1))
