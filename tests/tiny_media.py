"""Random checkpoints of the media engines, saved exactly like the real ones.

* :func:`write_ast` — an AudioSet classifier (``ASTForAudioClassification`` + its
  feature extractor config); ``force`` biases the head so one label always wins (the
  "forced classifier" tests use to mark laughter).
* :func:`write_openvoice` — OpenVoice's converter folder (``converter/config.json`` in
  OpenVoice's own format, ``converter/checkpoint.pth``) and neutral voices
  (``base_speakers/ses/*.pth``), built by coqui's real ``OpenVoice`` class.
* :func:`write_diffusion` — a Latent Consistency Model pipeline (UNet, VAE, CLIP text
  encoder and a byte-level CLIP tokenizer written here), saved with ``save_pretrained``.

Small by default for tests; the benchmarks pass production dimensions. Deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["AUDIOSET_LABELS", "OPENVOICE_V2", "build_diffusion", "write_ast", "write_diffusion", "write_openvoice"]

#: A few AudioSet labels (the real checkpoint has 527).
AUDIOSET_LABELS = ["Speech", "Laughter", "Crying, sobbing", "Sigh", "Music", "Silence"]

#: OpenVoice V2's converter dimensions (its ``config.json``).
OPENVOICE_V2: dict[str, Any] = {
    "data": {"sampling_rate": 22050, "filter_length": 1024, "hop_length": 256, "win_length": 1024, "n_speakers": 0},
    "model": {
        "zero_g": True, "inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2,
        "n_layers": 6, "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_rates": [8, 8, 2, 2],
        "upsample_initial_channel": 512, "upsample_kernel_sizes": [16, 16, 4, 4], "gin_channels": 256,
    },
}


def write_ast(folder: Path, *, force: str | None = None, production: bool = False) -> Path:
    """An AST audio classifier with :data:`AUDIOSET_LABELS` (random weights)."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    labels = AUDIOSET_LABELS
    if production:
        labels = [f"label {i}" for i in range(527)]
        labels[: len(AUDIOSET_LABELS)] = AUDIOSET_LABELS
        config = ASTConfig(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
        max_length = 1024
    else:
        max_length = 128
        config = ASTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_length=max_length, num_mel_bins=128, frequency_stride=16, time_stride=16,
            id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
        )
    model = ASTForAudioClassification(config).eval()
    if force is not None:
        with torch.no_grad():
            model.classifier.dense.weight.zero_()
            model.classifier.dense.bias.fill_(-8.0)
            model.classifier.dense.bias[labels.index(force)] = 8.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ASTFeatureExtractor(max_length=max_length).save_pretrained(folder)
    return folder


def write_openvoice(folder: Path, *, production: bool = False, voices: tuple[str, ...] = ("en-default", "es")) -> Path:
    """An OpenVoice converter folder (random weights) with neutral voices ``voices``."""
    import torch
    from TTS.vc.configs.openvoice_config import OpenVoiceArgs, OpenVoiceConfig
    from TTS.vc.models.openvoice import OpenVoice

    torch.manual_seed(0)
    original = json.loads(json.dumps(OPENVOICE_V2))
    if not production:
        original["model"].update(
            inter_channels=16, hidden_channels=16, filter_channels=32, upsample_initial_channel=32,
            gin_channels=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
        )
    converter = folder / "converter"
    converter.mkdir(parents=True, exist_ok=True)
    (converter / "config.json").write_text(json.dumps(original, indent=2))
    args = OpenVoiceArgs(**original["model"])
    model = OpenVoice(OpenVoiceConfig(model_args=args))
    torch.save({"model": model.state_dict()}, converter / "checkpoint.pth")
    ses = folder / "base_speakers" / "ses"
    ses.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(voices):
        generator = torch.Generator().manual_seed(100 + index)
        torch.save(torch.randn(1, args.gin_channels, 1, generator=generator), ses / f"{name}.pth")
    return folder


def _clip_tokenizer(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary without merges: every byte is a token."""
    # GPT-2's byte → printable character table, which CLIP's BPE works on.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_diffusion(folder: Path, *, production: bool = False) -> Path:
    """:func:`build_diffusion`, saved with ``save_pretrained`` into ``folder``."""
    build_diffusion(folder / "_tokenizer_source", production=production).save_pretrained(folder)
    return folder


def build_diffusion(tokenizer_dir: Path, *, production: bool = False) -> Any:
    """A Latent Consistency Model pipeline (random weights): SD 1.5 dimensions with
    ``production`` (LCM Dreamshaper v7's shape), else a tiny one that draws a 64x64
    picture in tens of milliseconds. The tokenizer's files are written to ``tokenizer_dir``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        LatentConsistencyModelPipeline,
        LCMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    _clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77)
    if production:
        text = CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
        )
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, time_cond_proj_dim=256,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    else:
        text = CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32, time_cond_proj_dim=32,
            block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )
    return LatentConsistencyModelPipeline(
        vae=vae, text_encoder=CLIPTextModel(text), tokenizer=tokenizer, unet=unet, scheduler=LCMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
