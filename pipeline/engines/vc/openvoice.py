"""The voice changer: OpenVoice's tone-colour converter (coqui-tts ``TTS.vc``), streamed.

OpenVoice (MyShell; code and the V2 weights ``myshell-ai/OpenVoiceV2`` under the MIT
licence) converts speech into another voice without text: a posterior encoder turns the
linear spectrogram into a latent, a normalising flow takes the source speaker's tone
colour out and puts the target's in, and a HiFi-GAN decoder makes audio. Timing,
intonation, laughter and crying come from the input: only the timbre changes.

**Streaming.** Every ``chunk_ms`` of input is converted with ``context_ms`` of audio
before it and ``lookahead_ms`` after it (the encoder and flow see the whole window; the
decoder only the chunk and a few frames of margin), and consecutive chunks are
cross-faded. A sample comes out one chunk plus the look-ahead after it went in: the
algorithmic latency (232 ms with the defaults: 14 frames of 11.6 ms, 6 ahead), whatever the compute time. The source
speaker's tone colour is measured from their first seconds of speech and refined up to
``source_s``.

Weights: a folder holding ``converter/config.json`` and ``converter/checkpoint.pth``
(OpenVoice's own layout; coqui builds the model from its real architecture, the
``model`` section of that config) and the neutral voices ``base_speakers/ses/*.pth``
(tone-colour embeddings: ``en-default``, ``es``, ``fr``, ...), as a local path or the hub
name (``polyvox models pull``); nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from loguru import logger

from pipeline.engines.base import VoiceConversionEngine, VoiceConversionStream
from pipeline.engines.device import pick_device
from pipeline.errors import ConfigError, EngineError, EngineUnavailableError
from pipeline.models import resolve_model

__all__ = ["OpenVoiceEngine"]

_INSTALL_HINT = "pip install 'polyvox[gpu]'"
#: Frames of decoder margin on each side of a chunk (the decoder's own receptive field).
_MARGIN_FRAMES = 3
#: Samples cross-faded between consecutive chunks.
_FADE = 128
#: Least source speech before its tone colour is measured from it alone.
_SOURCE_MIN_S = 1.0


def _import() -> tuple[Any, Any, Any, Any, Any]:
    try:
        import torch
        from TTS.utils.audio.torch_transforms import wav_to_spec
        from TTS.vc.configs.openvoice_config import OpenVoiceArgs, OpenVoiceConfig
        from TTS.vc.models.openvoice import OpenVoice
    except ImportError as exc:
        raise ImportError(f"the openvoice vc engine needs coqui-tts and torch ({exc}): {_INSTALL_HINT}") from exc
    return torch, wav_to_spec, OpenVoiceArgs, OpenVoiceConfig, OpenVoice


class OpenVoiceEngine(VoiceConversionEngine):
    """Streaming voice conversion with OpenVoice (V2 by default).

    Args:
        model: Folder (or hub name) with ``converter/`` and ``base_speakers/ses/``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        chunk_ms: Input converted per step (rounded to whole frames of 256 samples).
        lookahead_ms: Future audio each step waits for.
        context_ms: Past audio each step looks at.
        source_s: Source speech the speaker's own tone colour is measured from, at most.
        tau: Sampling temperature of the posterior encoder (OpenVoice's default 0.3).
        threads: torch CPU threads (``None``: torch's default).
    """

    name = "openvoice"

    def __init__(
        self,
        *,
        model: str = "myshell-ai/OpenVoiceV2",
        device: str = "auto",
        chunk_ms: float = 163.0,
        lookahead_ms: float = 70.0,
        context_ms: float = 400.0,
        source_s: float = 6.0,
        tau: float = 0.3,
        threads: int | None = None,
    ) -> None:
        if chunk_ms < 20 or lookahead_ms < 0 or context_ms < 0:
            raise ConfigError("openvoice chunk_ms must be at least 20 and lookahead_ms, context_ms not negative")
        self._model_name = model
        self._requested_device = device
        self._chunk_ms, self._lookahead_ms, self._context_ms = chunk_ms, lookahead_ms, context_ms
        self._source_s = source_s
        self._tau = tau
        self._threads = threads
        self._lock = threading.Lock()
        self.model: Any = None
        self._torch: Any = None
        self._spec: Any = None
        self._voices: dict[str, np.ndarray] = {}
        self.device = "cpu"
        self.hop = 256
        self.fft = 1024
        self.win = 1024
        self._rate = 22050

    # -- what the engine offers -----------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def chunk_frames(self) -> int:
        return max(1, round(self._chunk_ms / 1000 * self._rate / self.hop))

    @property
    def lookahead_frames(self) -> int:
        return max(0, round(self._lookahead_ms / 1000 * self._rate / self.hop))

    @property
    def context_frames(self) -> int:
        return max(_MARGIN_FRAMES, round(self._context_ms / 1000 * self._rate / self.hop))

    @property
    def latency_s(self) -> float:
        """One chunk plus the look-ahead, in seconds (the algorithmic latency)."""
        return (self.chunk_frames + self.lookahead_frames) * self.hop / self._rate

    def neutral_voices(self) -> list[str]:
        self.load()
        return list(self._voices)

    def neutral_voice(self, name: str) -> np.ndarray:
        self.load()
        return self._voices[name]

    # -- lifecycle --------------------------------------------------------------------

    def load(self) -> None:
        """Build the model from the checkpoint's config and load its weights (once).

        Raises:
            ImportError: coqui-tts or torch is missing.
            EngineUnavailableError: the folder is missing or incomplete.
        """
        with self._lock:
            if self.model is not None:
                return
            torch, wav_to_spec, OpenVoiceArgs, OpenVoiceConfig, OpenVoice = _import()
            root = resolve_model(self._model_name, kind="vc", allow_patterns=["converter/*", "base_speakers/ses/*"])
            converter = root / "converter" if (root / "converter" / "config.json").is_file() else root
            config_path, checkpoint = converter / "config.json", converter / "checkpoint.pth"
            if not config_path.is_file() or not checkpoint.is_file():
                raise EngineUnavailableError(
                    f"vc.model '{self._model_name}': no converter/config.json and converter/checkpoint.pth in {root}"
                )
            try:
                original = json.loads(config_path.read_text(encoding="utf-8"))
                known = {f.name for f in dataclasses.fields(OpenVoiceArgs)}
                args = OpenVoiceArgs(**{k: v for k, v in (original.get("model") or {}).items() if k in known})
                config = OpenVoiceConfig(model_args=args)
                model = OpenVoice(config)
                model.load_checkpoint(config, str(checkpoint), eval=True)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise EngineUnavailableError(f"vc.model '{self._model_name}' cannot be loaded: {exc}") from exc
            if self._threads:
                torch.set_num_threads(self._threads)
            self.device = pick_device(self._requested_device, torch)
            model.to(self.device)
            audio = model.config.audio
            self._rate = int(audio.output_sample_rate)
            self.hop, self.fft, self.win = int(audio.hop_length), int(audio.fft_size), int(audio.win_length)
            self._voices = self._load_voices(root, torch, model.gin_channels)
            self._torch, self._spec, self.model = torch, wav_to_spec, model
            logger.info(
                f"openvoice vc engine on {self.device}: {self._rate} Hz, latency {self.latency_s * 1000:.0f} ms, "
                f"neutral voices {', '.join(self._voices)}"
            )

    @staticmethod
    def _load_voices(root: Path, torch: Any, channels: int) -> dict[str, np.ndarray]:
        voices: dict[str, np.ndarray] = {}
        folder = root / "base_speakers" / "ses"
        for path in sorted(folder.glob("*.pth")) if folder.is_dir() else []:
            try:
                tensor = torch.load(path, map_location="cpu", weights_only=True)
                voices[path.stem] = np.asarray(tensor, dtype=np.float32).reshape(-1)
            except Exception as exc:  # noqa: BLE001 - one bad file costs that voice
                logger.warning(f"neutral voice {path} is unreadable: {exc}")
        default = "en-default" if "en-default" in voices else None
        if default:
            voices = {default: voices[default], **{k: v for k, v in voices.items() if k != default}}
        if not voices:
            logger.warning(f"{root} has no base_speakers/ses/*.pth: the neutral voice is a flat tone colour")
            voices["neutral"] = np.zeros(channels, dtype=np.float32)
        return voices

    def warmup(self) -> None:
        stream = self.open_stream(self.neutral_voice(self.neutral_voices()[0]))
        stream.feed(np.zeros(16000 // 2, dtype=np.int16))
        stream.flush()

    # -- conversion -------------------------------------------------------------------

    def embed(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """The tone colour of the voice in ``pcm`` (at least 1 s), a vector of ``gin_channels``."""
        self.load()
        audio = np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if sample_rate != self._rate:
            audio = soxr.resample(audio, sample_rate, self._rate)
        if len(audio) < self._rate * 0.5:
            raise EngineError("a voice needs at least half a second of speech", retryable=False)
        return self.tone_colour(audio)

    def tone_colour(self, audio: np.ndarray) -> np.ndarray:
        """The tone colour of float audio at the model's rate."""
        torch = self._torch
        with torch.inference_mode():
            spec = self._spectrogram(audio)
            g = self.model.ref_enc(spec.transpose(1, 2))
        return g.reshape(-1).float().cpu().numpy()

    def _spectrogram(self, audio: np.ndarray) -> Any:
        torch = self._torch
        y = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)[None, None]
        return self._spec(y, n_fft=self.fft, hop_length=self.hop, win_length=self.win, center=False)

    def convert_window(self, audio: np.ndarray, first: int, count: int, g_src: np.ndarray, g_tgt: np.ndarray) -> np.ndarray:
        """Convert a window of float audio (model rate, whole frames) and return the audio of
        its frames ``[first, first + count)`` plus :data:`_FADE` samples after them.

        The encoder and flow see the whole window; the decoder sees the frames asked for
        with a small margin.
        """
        torch = self._torch
        model = self.model
        with torch.inference_mode():
            spec = self._spectrogram(audio)
            frames = spec.shape[-1]
            lengths = torch.tensor([frames], device=self.device)
            src = torch.from_numpy(g_src).to(self.device).view(1, -1, 1)
            tgt = torch.from_numpy(g_tgt).to(self.device).view(1, -1, 1)
            zero = torch.zeros_like(src)
            z, _m, _logs, mask = model.enc_q(spec, lengths, g=zero if model.zero_g else src, tau=self._tau)
            z_p = model.flow(z, mask, g=src)
            z_hat = model.flow(z_p, mask, g=tgt, reverse=True)
            lo = max(0, first - _MARGIN_FRAMES)
            hi = min(frames, first + count + _MARGIN_FRAMES)
            wav = model.dec((z_hat * mask)[:, :, lo:hi], g=zero if model.zero_g else tgt)[0, 0]
            start = (first - lo) * self.hop
            out = wav[start : start + count * self.hop + _FADE].float().cpu().numpy()
        return out

    def open_stream(self, target: np.ndarray) -> VoiceConversionStream:
        self.load()
        return _OpenVoiceStream(self, np.asarray(target, dtype=np.float32).reshape(-1))


class _OpenVoiceStream(VoiceConversionStream):
    """One participant's conversion: their audio since the stream opened, chunk by chunk."""

    def __init__(self, engine: OpenVoiceEngine, target: np.ndarray) -> None:
        self._e = engine
        self._target = target
        self.latency_s = engine.latency_s
        self._source: list[np.ndarray] = []
        self._source_len = 0
        self._g_src: np.ndarray | None = None
        self._measured_at = 0
        self._reset()

    def _reset(self) -> None:
        e = self._e
        # Low quality: 1 ms of delay instead of ~35 ms at HQ, and plenty for speech.
        self._resampler = soxr.ResampleStream(16000, e.sample_rate, 1, dtype="float32", quality="LQ")
        # Silence before the first sample, as the first chunk's past.
        self._buf = np.zeros(e.context_frames * e.hop, dtype=np.float32)
        self._buf_start = -e.context_frames * e.hop  # stream position of _buf[0]
        self._fed = 0  # real samples (model rate) fed since the reset
        self._done = 0  # frames converted since the reset
        self._tail: np.ndarray | None = None

    def feed(self, pcm: np.ndarray) -> list[np.ndarray]:
        audio = np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return self._push(self._resampler.resample_chunk(audio))

    def flush(self) -> list[np.ndarray]:
        e = self._e
        rest = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        out = self._push(rest)
        real_end = self._fed
        pad = (e.chunk_frames + e.lookahead_frames + 1) * e.hop
        self._buf = np.concatenate((self._buf, np.zeros(pad, dtype=np.float32)))
        while self._done * e.hop < real_end:
            chunk = self._step()
            keep = real_end - (self._done - e.chunk_frames) * e.hop
            out.append(chunk[: max(0, min(len(chunk), keep))])
        self._reset()
        return [c for c in out if len(c)]

    def _push(self, audio: np.ndarray) -> list[np.ndarray]:
        e = self._e
        if len(audio):
            self._buf = np.concatenate((self._buf, audio))
            self._fed += len(audio)
            if self._source_len < e._source_s * e.sample_rate:
                self._source.append(audio)
                self._source_len += len(audio)
        out = []
        while (self._done + e.chunk_frames + e.lookahead_frames) * e.hop <= self._fed:
            out.append(self._step())
        return out

    def _source_colour(self, window: np.ndarray) -> np.ndarray:
        """The speaker's own tone colour: from their speech so far (refined as it grows
        up to ``source_s``), or from the window itself at the very start."""
        e = self._e
        rate = e.sample_rate
        if self._source_len < _SOURCE_MIN_S * rate:
            return e.tone_colour(window)
        # Measure again each time the speech heard has doubled, up to source_s.
        if self._g_src is None or (self._source_len >= 2 * self._measured_at and self._measured_at < e._source_s * rate):
            self._g_src = e.tone_colour(np.concatenate(self._source))
            self._measured_at = self._source_len
        return self._g_src

    def _step(self) -> np.ndarray:
        e = self._e
        hop, count = e.hop, e.chunk_frames
        first = self._done  # frame index (since the reset) of the chunk's first frame
        begin = (first - e.context_frames) * hop
        end = (first + count + e.lookahead_frames) * hop
        window = self._buf[begin - self._buf_start : end - self._buf_start]
        try:
            converted = e.convert_window(window, e.context_frames, count, self._source_colour(window), self._target)
        except Exception as exc:  # noqa: BLE001 - reported as the engine's error
            raise EngineError(f"voice conversion failed: {exc}") from exc
        chunk, tail = converted[: count * hop], converted[count * hop :]
        if self._tail is not None and len(self._tail):
            n = min(len(self._tail), len(chunk))
            ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
            chunk = chunk.copy()
            chunk[:n] = self._tail[:n] * (1.0 - ramp) + chunk[:n] * ramp
        self._tail = tail
        self._done += count
        # Forget what no later window reaches back to.
        keep_from = (self._done - e.context_frames) * hop
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return np.clip(chunk * 32767.0, -32768, 32767).astype(np.int16)

    def close(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._source = []
