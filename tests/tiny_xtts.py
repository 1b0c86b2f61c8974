"""Writes XTTS checkpoint folders with random weights, laid out like coqui/XTTS-v2.

The folder holds what the real one holds and what ``Xtts.load_checkpoint`` reads:

* ``config.json``: an ``XttsConfig`` (``model_args`` = ``XttsArgs``);
* ``vocab.json``: a ``tokenizers`` JSON (the real one is a BPE vocabulary of 6681 tokens;
  here a character vocabulary with the same special tokens, padded to the size asked for);
* ``model.pth``: ``{"model": state_dict}``, as coqui saves it (the mel statistics the
  conditioning needs are a buffer of the model, so they are in the state dict);
* ``speakers_xtts.pth`` (optional): built-in speakers, name → conditioning latents.

:func:`write_tiny_xtts` makes a small GPT (the HiFi-GAN decoder and speaker encoder are
not configurable in XTTS and keep their real size) for tests; :func:`write_xtts_v2` makes
one the real size of XTTS v2 for benchmarks. Random weights speak noise, but every tensor
shape, every loader step and every streaming step is the real model's.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

#: XTTS v2's ``model_args`` (its ``config.json`` on the hub), minus the paths.
XTTS_V2_ARGS: dict[str, Any] = {
    "gpt_batch_size": 1,
    "enable_redaction": False,
    "kv_cache": True,
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_layers": 30,
    "gpt_n_model_channels": 1024,
    "gpt_n_heads": 16,
    "gpt_number_text_tokens": 6681,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_code_stride_len": 1024,
    "gpt_use_masking_gt_prompt_approach": True,
    "gpt_use_perceiver_resampler": True,
    "input_sample_rate": 22050,
    "output_sample_rate": 24000,
    "output_hop_length": 256,
    "decoder_input_dim": 1024,
    "d_vector_dim": 512,
    "cond_d_vector_in_each_upsampling_layer": True,
    "duration_const": 102400,
}
#: XTTS v2's inference and cloning settings (top level of its ``config.json``).
XTTS_V2_SETTINGS: dict[str, Any] = {
    "temperature": 0.75,
    "length_penalty": 1.0,
    "repetition_penalty": 5.0,
    "top_k": 50,
    "top_p": 0.85,
    "gpt_cond_len": 30,
    "gpt_cond_chunk_len": 4,
    "max_ref_len": 30,
    "sound_norm_refs": False,
}
#: A GPT of 2 layers × 64 channels, at most 80 audio tokens (~3.7 s) per sentence.
TINY_ARGS: dict[str, Any] = {
    **XTTS_V2_ARGS,
    "gpt_layers": 2,
    "gpt_n_model_channels": 64,
    "gpt_n_heads": 4,
    "gpt_max_audio_tokens": 80,
    "decoder_input_dim": 64,
}

_SPECIALS = ["[STOP]", "[UNK]", "[SPACE]", "[START]"]
_LANGUAGE_TOKENS = [
    f"[{code}]"
    for code in (
        "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu",
        "ko", "ja", "hi",
    )
]  # fmt: skip
_CHARACTERS = string.ascii_lowercase + string.digits + "'.,!?¿¡-:;\"()" + "áéíóúüñçàèìòùâêîôûäöß"


def write_vocab(path: Path, size: int | None = None) -> int:
    """Write a ``tokenizers`` vocabulary: the special and language tokens, then characters.

    Args:
        path: Where to write ``vocab.json``.
        size: Pad the vocabulary with unused tokens to this many entries (XTTS v2: 6681).

    Returns:
        The number of tokens.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace

    tokens = [*_SPECIALS, *_LANGUAGE_TOKENS, *_CHARACTERS]
    if size is not None:
        if size < len(tokens):
            raise ValueError(f"a vocabulary needs at least {len(tokens)} tokens")
        tokens += [f"<unused{i}>" for i in range(size - len(tokens))]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens([*_SPECIALS, *_LANGUAGE_TOKENS])
    tokenizer.save(str(path))
    return len(tokens)


def write_xtts_checkpoint(
    folder: Path,
    model_args: dict[str, Any],
    *,
    vocab_size: int | None = None,
    speakers: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``config.json``, ``vocab.json`` and ``model.pth`` (and ``speakers_xtts.pth``).

    Args:
        folder: The checkpoint folder (created).
        model_args: ``XttsArgs`` fields.
        vocab_size: Pad the vocabulary to this size (``None``: just the characters).
        speakers: Names of built-in speakers to write to ``speakers_xtts.pth``
            (``None``: no speakers file).
        seed: Seed of the random weights.

    Returns:
        ``folder``.
    """
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.models.xtts import Xtts

    folder.mkdir(parents=True, exist_ok=True)
    tokens = write_vocab(folder / "vocab.json", vocab_size)
    args = dict(
        model_args,
        gpt_number_text_tokens=tokens,
        gpt_start_text_token=_SPECIALS.index("[START]"),
        gpt_stop_text_token=_SPECIALS.index("[STOP]"),
    )
    config = XttsConfig(model_args=XttsArgs(**args), **XTTS_V2_SETTINGS)
    config.save_json(str(folder / "config.json"))

    torch.manual_seed(seed)
    # Token ids do not change any weight's shape; the loader takes them from vocab.json.
    model = Xtts(config)
    # The real mel statistics are per-band log-mel scales of a few units; ones would do,
    # but distinct values make a wrong normalisation visible.
    model.mel_stats.copy_(torch.linspace(2.0, 5.0, model.mel_stats.numel()))
    torch.save({"model": model.state_dict()}, folder / "model.pth")

    if speakers:
        dim = args["gpt_n_model_channels"]
        table = {
            name: {
                "gpt_cond_latent": torch.randn(1, 32, dim) * 0.1,
                "speaker_embedding": torch.nn.functional.normalize(
                    torch.randn(1, args["d_vector_dim"], 1), dim=1
                ),
            }
            for name in speakers
        }
        torch.save(table, folder / "speakers_xtts.pth")
    (folder / "README.txt").write_text(
        json.dumps({"random_weights": True, "seed": seed, "model_args": args}, indent=1)
    )
    return folder


def write_tiny_xtts(folder: Path, *, speakers: list[str] | None = None) -> Path:
    """A tiny XTTS checkpoint for tests (GPT of 2 × 64; real-size decoder)."""
    return write_xtts_checkpoint(folder, TINY_ARGS, speakers=speakers)


def write_xtts_v2(folder: Path, *, speakers: list[str] | None = None) -> Path:
    """An XTTS v2 checkpoint of the real size (30 × 1024 GPT, 6681 text tokens)."""
    return write_xtts_checkpoint(folder, XTTS_V2_ARGS, vocab_size=6681, speakers=speakers)
