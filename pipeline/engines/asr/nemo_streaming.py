"""Cache-aware streaming for NeMo's streaming checkpoints (used by ``NeMoASREngine``).

Cache-aware FastConformers (``nvidia/stt_en_fastconformer_hybrid_large_streaming_multi``
and the like) are trained with limited left and right attention context, so they can
encode audio chunk by chunk, carrying per-layer caches (attention keys of the last
frames, convolution states) from one chunk to the next: each chunk is encoded once,
and the hypothesis grows without re-decoding anything.

A stream here keeps its own caches and decoder state and asks the engine's
micro-batcher to run each chunk; chunks of different streams that are ready together
run as one batch (their caches stacked along the batch axis), so many speakers cost
about one forward pass per chunk period.

The features are the model's own mel spectrogram, computed incrementally: a mel frame
is final once the audio its window covers has arrived (the right edge of the signal is
padded only when the stream is finalized), so the chunks are exactly those NeMo's
``CacheAwareStreamingAudioBuffer`` cuts from the whole recording. Only checkpoints
without per-utterance feature normalisation qualify (streaming ones have none).

Offline checkpoints (Parakeet, FastConformer hybrid) stream with
:class:`pipeline.engines.base.RedecodingASRStream` instead: their attention sees the
whole utterance, so the engine re-decodes the window since the last cut.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from pipeline.audio import mono_float32
from pipeline.engines.base import ASRStream, Transcript, Word
from pipeline.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

__all__ = [
    "CacheAwareStreamer", "CacheAwareStream", "StepKey", "cache_aware_capability",
    "enable_word_timestamps",
]


class StepKey(NamedTuple):
    """The micro-batcher's key for cache-aware chunks: chunks batch when these agree.

    The first chunk of a stream has no pre-encode context (NeMo drops nothing from it)
    and a final chunk keeps all of its outputs, so each kind runs in its own batch.
    """

    first: bool
    final: bool


@dataclass
class _DecoderState:
    """What a stream carries from one chunk to the next."""

    cache_channel: Any  # (layers, 1, cache, d_model)
    cache_time: Any  # (layers, 1, d_model, conv context)
    cache_length: Any  # (1,)
    hypothesis: Any = None  # RNN-T: the partial hypothesis (its decoder state)
    last_label: int | None = None  # CTC: the last frame's label (repeats collapse across chunks)
    frames: int = 0  # encoder frames so far


@dataclass
class _StepInput:
    features: Any  # (n_mels, T) float32 on the CPU
    state: _DecoderState | None  # None for a stream's first chunk


@dataclass
class _StepOutput:
    tokens: list[tuple[int, int]]  # (token id, encoder frame since the stream opened)
    state: _DecoderState


@dataclass
class _Chunking:
    """Where chunks begin and how long they are, in mel frames (NeMo's streaming_cfg)."""

    first_size: int
    size: int
    first_shift: int
    shift: int
    first_context: int  # pre-encode context frames before the first chunk (zeros)
    context: int  # pre-encode context frames before every later chunk
    drop_extra: int  # encoder frames to drop that the context produced
    first_min: int  # fewest frames a first chunk needs to give any output
    min: int


def cache_aware_capability(model: Any) -> str | None:
    """Why ``model`` cannot stream cache-aware, or ``None`` when it can."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "cache_aware_stream_step"):
        return "its encoder is not a streaming (cache-aware) encoder"
    if getattr(encoder, "att_context_style", None) != "chunked_limited":
        return "it was not trained for cache-aware streaming (att_context_style is not chunked_limited)"
    normalize = str(model.cfg.preprocessor.get("normalize", "NA"))
    if normalize.lower() not in ("na", "none", ""):
        return f"its features are normalised per utterance ({normalize})"
    return None


def enable_word_timestamps(model: Any, decoder_type: str | None) -> None:
    """Make ``model``'s decoding compute word timestamps (``timestamp["word"]``)."""
    from omegaconf import open_dict

    hybrid = hasattr(model, "ctc_decoder") and hasattr(model, "joint")
    if hybrid and decoder_type == "ctc":
        decoding = copy.deepcopy(model.cfg.aux_ctc.decoding)
    else:
        decoding = copy.deepcopy(model.cfg.decoding)
    with open_dict(decoding):
        decoding.compute_timestamps = True
    if hybrid:
        model.change_decoding_strategy(decoding, decoder_type=decoder_type or "rnnt", verbose=False)
    else:
        model.change_decoding_strategy(decoding, verbose=False)


class CacheAwareStreamer:
    """The model side of cache-aware streaming: features, chunk geometry, batched steps.

    One per engine. :meth:`run_steps` runs on the engine's micro-batcher thread (the
    only thread that touches the model); the rest is thread-safe.

    Args:
        model: A restored, eval-mode NeMo ASR model that qualifies
            (:func:`cache_aware_capability`).
        device: Where the model lives (``cpu``, ``cuda:0``).
        decoder_type: ``ctc``, ``rnnt`` or ``tdt``.
        autocast: A context-manager factory for the forward pass.
        att_context_size: ``[left, right]`` for checkpoints trained with several
            look-aheads (``streaming_multi``: [70, 13] ~1 s, [70, 6], [70, 1], [70, 0]
            ~80 ms); ``None`` keeps the checkpoint's default.
    """

    def __init__(
        self,
        model: Any,
        device: str,
        decoder_type: str,
        autocast: Callable[[], Any],
        att_context_size: Sequence[int] | None = None,
    ) -> None:
        from omegaconf import OmegaConf

        self.model = model
        self.device = device
        self.decoder_type = decoder_type
        self._autocast = autocast
        encoder = model.encoder
        if att_context_size is not None:
            encoder.set_default_att_context_size(list(att_context_size))
        encoder.setup_streaming_params()
        cfg = encoder.streaming_cfg

        def pair(value: Any) -> tuple[int, int]:
            return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))

        sampling = encoder.pre_encode.get_sampling_frames() if hasattr(encoder.pre_encode, "get_sampling_frames") else 0
        first_size, size = pair(cfg.chunk_size)
        first_shift, shift = pair(cfg.shift_size)
        first_context, context = pair(cfg.pre_encode_cache_size)
        first_min, later_min = pair(sampling)
        self.chunking = _Chunking(
            first_size, size, first_shift, shift, first_context, context,
            int(cfg.drop_extra_pre_encoded), first_min, later_min,
        )
        # NeMo's own streaming buffer uses a copy of the preprocessor without dither or
        # padding; so does this (on the CPU: the stream threads compute their features).
        pre_cfg = copy.deepcopy(model.cfg.preprocessor)
        OmegaConf.set_struct(pre_cfg, False)
        pre_cfg.dither = 0.0
        pre_cfg.pad_to = 0
        self.preprocessor = model.from_config_dict(pre_cfg).cpu().eval()
        self.sample_rate = int(pre_cfg.get("sample_rate", 16000))
        self.hop = int(round(float(pre_cfg.window_stride) * self.sample_rate))
        self.n_fft = int(self.preprocessor.featurizer.n_fft)
        self.exact_pad = bool(pre_cfg.get("exact_pad", False))
        if self.exact_pad:
            raise ValueError("cache-aware streaming needs centred STFT frames (exact_pad: false)")
        self.n_mels = int(encoder._feat_in)
        #: Seconds per encoder frame (hop x subsampling), for word timings.
        self.frame_seconds = self.hop * int(encoder.subsampling_factor) / self.sample_rate
        self.att_context_size = list(encoder.att_context_size)
        self.tokenizer = model.tokenizer

    @property
    def latency_s(self) -> float:
        """Audio a chunk spans (what a partial lags behind at most, before compute)."""
        return self.chunking.shift * self.hop / self.sample_rate

    # --- features (stream threads) -----------------------------------------------------

    def features(self, samples: np.ndarray) -> torch.Tensor:
        """Mel frames of ``samples`` (float32), as the model's preprocessor makes them."""
        import torch

        signal = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        length = torch.tensor([signal.shape[1]])
        with torch.inference_mode():
            feats, lengths = self.preprocessor(input_signal=signal, length=length)
        return feats[0, :, : int(lengths[0])].clone()

    # --- the model (batcher thread) ----------------------------------------------------

    def run_steps(self, key: StepKey, inputs: list[_StepInput]) -> list[_StepOutput]:
        """Encode and decode one chunk of each stream in ``inputs``, as one batch."""
        import torch

        model = self.model
        encoder = model.encoder
        batch = len(inputs)
        lengths = torch.tensor([item.features.shape[1] for item in inputs], dtype=torch.long)
        signal = torch.zeros((batch, self.n_mels, int(lengths.max())), dtype=torch.float32)
        for row, item in enumerate(inputs):
            signal[row, :, : item.features.shape[1]] = item.features
        states = [item.state for item in inputs]
        try:
            with torch.inference_mode(), self._autocast():
                if key.first:
                    channel, time_cache, cache_length = encoder.get_initial_cache_state(
                        batch_size=batch, device=torch.device(self.device)
                    )
                else:
                    assert all(state is not None for state in states)
                    channel = torch.cat([s.cache_channel for s in states], dim=1)  # type: ignore[union-attr]
                    time_cache = torch.cat([s.cache_time for s in states], dim=1)  # type: ignore[union-attr]
                    cache_length = torch.cat([s.cache_length for s in states], dim=0)  # type: ignore[union-attr]
                encoded, encoded_len, channel, time_cache, cache_length = encoder.cache_aware_stream_step(
                    processed_signal=signal.to(self.device),
                    processed_signal_length=lengths.to(self.device),
                    cache_last_channel=channel,
                    cache_last_time=time_cache,
                    cache_last_channel_len=cache_length,
                    keep_all_outputs=key.final,
                    drop_extra_pre_encoded=0 if key.first else self.chunking.drop_extra,
                )
                if self.decoder_type == "ctc":
                    new_tokens, extra = self._ctc(encoded, encoded_len, states)
                else:
                    new_tokens, extra = self._transducer(encoded, encoded_len, states)
        except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
            torch.cuda.empty_cache()
            raise EngineError(f"NeMo ran out of GPU memory streaming {batch} chunks") from exc
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"NeMo failed on a streaming chunk: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
        outputs = []
        for row, state in enumerate(states):
            done = state.frames if state is not None else 0
            tokens = [(token, done + frame) for token, frame in new_tokens[row]]
            hypothesis, last_label = extra[row]
            outputs.append(_StepOutput(tokens, _DecoderState(
                channel[:, row : row + 1], time_cache[:, row : row + 1], cache_length[row : row + 1],
                hypothesis=hypothesis, last_label=last_label, frames=done + int(encoded_len[row]),
            )))
        return outputs

    def _ctc(self, encoded: Any, encoded_len: Any, states: list[_DecoderState | None]) -> tuple[list[Any], list[Any]]:
        decoder = self.model.ctc_decoder if hasattr(self.model, "ctc_decoder") else self.model.decoder
        blank = int(decoder.num_classes_with_blank) - 1  # NeMo's CTC blank is the last class
        predictions = decoder(encoder_output=encoded).argmax(dim=-1).cpu()
        tokens: list[list[tuple[int, int]]] = []
        extra: list[tuple[Any, int | None]] = []
        for row, state in enumerate(states):
            previous = state.last_label if state is not None else None
            found = []
            for frame, label in enumerate(predictions[row, : int(encoded_len[row])].tolist()):
                if label != blank and label != previous:
                    found.append((int(label), frame))
                previous = label
            tokens.append(found)
            extra.append((None, previous))
        return tokens, extra

    def _transducer(self, encoded: Any, encoded_len: Any, states: list[_DecoderState | None]) -> tuple[list[Any], list[Any]]:
        previous = [state.hypothesis if state is not None else None for state in states]
        before = [_length(h.y_sequence) if h is not None else 0 for h in previous]
        # The greedy search itself, not the decoding wrapper around it: the wrapper turns
        # timestamps into per-word dicts (word_timestamps), which partial hypotheses
        # cannot be merged with, and decodes the text of every hypothesis every chunk.
        (hypotheses,) = self.model.decoding.decoding(
            encoder_output=encoded, encoded_lengths=encoded_len, partial_hypotheses=previous,
        )
        tokens: list[list[tuple[int, int]]] = []
        extra: list[tuple[Any, int | None]] = []
        for row, hypothesis in enumerate(hypotheses):
            ids = _as_list(hypothesis.y_sequence)[before[row] :]
            # Greedy decoders time tokens by the frame of the chunk they were emitted at.
            stamps = _as_list(hypothesis.timestamp)[before[row] :] if not isinstance(hypothesis.timestamp, dict) else []
            last = max(int(encoded_len[row]) - 1, 0)
            frames = [min(max(int(s), 0), last) for s in stamps] if len(stamps) == len(ids) else [last] * len(ids)
            tokens.append([(int(t), f) for t, f in zip(ids, frames, strict=True)])
            extra.append((hypothesis, None))
        return tokens, extra

    # --- text -----------------------------------------------------------------------------

    def words(self, tokens: list[tuple[int, int]]) -> list[Word]:
        """Words (SentencePiece pieces starting with ▁ begin one) with their times."""
        if not tokens:
            return []
        pieces = self.tokenizer.ids_to_tokens([t for t, _ in tokens])
        groups: list[list[tuple[int, int]]] = []
        for (token, frame), piece in zip(tokens, pieces, strict=True):
            if not groups or str(piece).startswith("▁"):
                groups.append([])
            groups[-1].append((token, frame))
        words = []
        for group in groups:
            text = self.tokenizer.ids_to_text([t for t, _ in group]).strip()
            if text:
                words.append(Word(
                    text, group[0][1] * self.frame_seconds, (group[-1][1] + 1) * self.frame_seconds,
                ))
        return words


class CacheAwareStream(ASRStream):
    """One participant's cache-aware stream (see the module doc).

    ``feed`` runs every chunk that became complete (through the engine's batcher, with
    other streams' chunks); ``partial`` is then free: it reads the tokens so far. A
    partial lags the audio by less than one chunk (``CacheAwareStreamer.latency_s``).
    ``finalize`` pads the signal's end and runs the last, short chunk on a copy of the
    state, so the stream can go on if speech resumes.

    Args:
        streamer: The engine's :class:`CacheAwareStreamer`.
        submit: ``submit(key, items) -> outputs``: the engine's micro-batcher.
        language: ISO 639-1 code (for the transcripts).
        punctuated: Whether the model writes punctuation (for the transcripts).
    """

    def __init__(
        self,
        streamer: CacheAwareStreamer,
        submit: Callable[[StepKey, list[_StepInput]], list[_StepOutput]],
        language: str,
        punctuated: bool,
    ) -> None:
        self.language = language
        self._streamer = streamer
        self._submit = submit
        self._punctuated = punctuated
        chunking = streamer.chunking
        self._chunking = chunking
        self._raw = np.zeros(0, dtype=np.float32)  # samples from ``_raw_start`` on
        self._raw_start = 0
        self._fed = 0  # samples since open
        self._feats: Any = None  # mel frames from ``_feat_start`` on (final ones only)
        self._feat_start = 0
        self._feat_end = 0
        self._next = 0  # mel frame where the next chunk begins
        self._state: _DecoderState | None = None
        self._tokens: list[tuple[int, int]] = []  # (token, encoder frame) since the last cut
        self._final: Transcript | None = None
        self._closed = False
        self._lock = threading.Lock()

    # --- ASRStream ---------------------------------------------------------------------

    def feed(self, pcm: np.ndarray) -> None:
        samples = mono_float32(pcm, "NeMo ASR")
        with self._lock:
            self._check_open()
            if samples.size == 0:
                return
            self._raw = np.concatenate([self._raw, samples])
            self._fed += samples.size
            self._final = None
            self._extend_features()
            while self._chunk_ready():
                self._run_chunk()

    def partial(self) -> Transcript:
        with self._lock:
            self._check_open()
            if self._final is not None:
                return self._final
            return self._transcript(self._tokens)

    def finalize(self) -> Transcript:
        with self._lock:
            self._check_open()
            if self._final is not None:
                return self._final
            tokens = list(self._tokens)
            tail = self._tail()
            if tail is not None:
                state = self._state
                if state is not None and state.hypothesis is not None:
                    # The decoder merges into the hypothesis in place: finalize on a copy.
                    state = _DecoderState(
                        state.cache_channel, state.cache_time, state.cache_length,
                        copy.deepcopy(state.hypothesis), state.last_label, state.frames,
                    )
                key = StepKey(first=state is None, final=True)
                (output,) = self._submit(key, [_StepInput(tail, state)])
                tokens += output.tokens
            self._final = self._transcript(tokens)
            return self._final

    def cut(self, at: float) -> None:
        with self._lock:
            self._check_open()
            seconds = self._streamer.frame_seconds
            words = self._streamer.words(self._tokens)
            keep_from = next((w.start for w in words if w.start >= at - 1e-6), None)
            if keep_from is None:
                self._tokens = []
            else:
                self._tokens = [(t, f) for t, f in self._tokens if f * seconds >= keep_from - 1e-6]
            self._final = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._state = None
            self._feats = None
            self._raw = np.zeros(0, dtype=np.float32)
            self._tokens = []

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the ASR stream is closed", retryable=False)

    def _first_chunk(self) -> bool:
        return self._state is None

    def _chunk_ready(self) -> bool:
        size = self._chunking.first_size if self._first_chunk() else self._chunking.size
        return self._next + size <= self._feat_end

    def _extend_features(self) -> None:
        """Compute the mel frames whose window the audio fed so far covers completely."""
        half = self._streamer.n_fft // 2
        hop = self._streamer.hop
        if self._fed < half:
            return
        ready = (self._fed - half) // hop + 1
        new = self._frames(self._feat_end, ready, final=False)
        if new is None:
            return
        self._feats = new if self._feats is None else _cat(self._feats, new)
        self._feat_end = ready

    def _frames(self, start: int, stop: int, *, final: bool) -> Any:
        """Mel frames ``start``..``stop`` (stream frame numbers), or None if empty.

        The preprocessor runs on the audio from two frames before ``start`` (a frame's
        window reaches n_fft/2 samples back, and pre-emphasis one more), so the frames
        it returns from ``start`` on equal those of the whole recording.
        """
        if stop <= start:
            return None
        hop = self._streamer.hop
        segment_frame = max(start - 2, 0)
        segment_start = segment_frame * hop
        feats = self._streamer.features(self._raw[segment_start - self._raw_start :])
        offset = start - segment_frame
        frames = feats[:, offset : offset + (stop - start)]
        if not final:
            # Audio before the next frame's window is no longer needed.
            keep_from = max(stop - 2, 0) * hop
            if keep_from > self._raw_start:
                self._raw = self._raw[keep_from - self._raw_start :]
                self._raw_start = keep_from
        return frames

    def _chunk(self, size: int, first: bool) -> Any:
        """Context frames + ``size`` frames from ``_next`` (fewer at the end)."""
        import torch

        context = self._chunking.first_context if first else self._chunking.context
        begin = self._next - context
        pad = max(0, -begin)
        begin = max(begin, self._feat_start)
        frames = self._feats[:, begin - self._feat_start : self._next + size - self._feat_start]
        if pad:
            frames = torch.cat([torch.zeros((frames.shape[0], pad), dtype=frames.dtype), frames], dim=1)
        return frames

    def _run_chunk(self) -> None:
        first = self._first_chunk()
        size = self._chunking.first_size if first else self._chunking.size
        shift = self._chunking.first_shift if first else self._chunking.shift
        (output,) = self._submit(StepKey(first=first, final=False), [_StepInput(self._chunk(size, first), self._state)])
        self._state = output.state
        self._tokens += output.tokens
        self._next += shift
        # Frames before the next chunk's context are no longer needed.
        keep = self._next - self._chunking.context
        if keep > self._feat_start:
            self._feats = self._feats[:, keep - self._feat_start :]
            self._feat_start = keep

    def _tail(self) -> Any:
        """The last chunk: pending frames plus the end-padded final ones (None if too short)."""
        total = self._fed // self._streamer.hop + 1 if self._fed else 0
        edge = self._frames(self._feat_end, total, final=True)
        first = self._first_chunk()
        available = self._feat_end - self._next + (edge.shape[1] if edge is not None else 0)
        if available <= 0 or available < (self._chunking.first_min if first else self._chunking.min):
            return None  # NeMo's buffer skips a remainder too short to give an output too
        saved = self._feats
        if edge is not None:
            self._feats = edge if saved is None else _cat(saved, edge)
        try:
            return self._chunk(available, first)
        finally:
            self._feats = saved

    def _transcript(self, tokens: list[tuple[int, int]]) -> Transcript:
        words = self._streamer.words(tokens)
        text = self._streamer.tokenizer.ids_to_text([t for t, _ in tokens]).strip() if tokens else ""
        return Transcript(
            text=" ".join(text.split()),
            language=self.language,
            punctuated=self._punctuated,
            extra={"streaming": "cache_aware", "att_context_size": self._streamer.att_context_size},
            words=words,
        )


def _cat(left: Any, right: Any) -> Any:
    import torch

    return torch.cat([left, right], dim=1)


def _length(sequence: Any) -> int:
    return len(_as_list(sequence))


def _as_list(sequence: Any) -> list[Any]:
    if sequence is None:
        return []
    if hasattr(sequence, "tolist"):
        out = sequence.tolist()
        return out if isinstance(out, list) else [out]
    return list(sequence)



