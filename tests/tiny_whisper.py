"""A tiny random Whisper, converted to CTranslate2 the way faster-whisper's models are.

:func:`build_tiny_whisper` writes a folder that looks exactly like the ones faster-whisper
downloads (``Systran/faster-whisper-small``): ``model.bin`` + ``config.json`` +
``vocabulary.json`` from CTranslate2's ``TransformersConverter``, plus ``tokenizer.json``
and ``preprocessor_config.json``. It gets there the way those were made: a
``transformers`` ``WhisperForConditionalGeneration`` (here with random weights and a few
dozen dimensions) and its tokenizer are saved, then converted.

The tokenizer keeps Whisper's real layout, which CTranslate2 and faster-whisper rely on:
50 257 text tokens (a byte-level BPE trained on a small corpus, padded with unreachable
fillers, the last one empty as in Whisper's multilingual vocabulary), then ``<|endoftext|>``, ``<|startoftranscript|>``, one token per Whisper
language, the task tokens, ``<|nospeech|>``, ``<|notimestamps|>`` and the 1501 timestamp
tokens. A vocabulary that size is what makes CTranslate2 treat the model as multilingual
(language tokens, language identification).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.tiny_models import corpus_lines

__all__ = ["WHISPER_SMALL", "WHISPER_TEXT_TOKENS", "build_tiny_whisper", "whisper_language_codes"]

#: Whisper's text vocabulary size (ids below this are text; ``<|endoftext|>`` is this id).
WHISPER_TEXT_TOKENS = 50257
_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
#: The tiny test model's dimensions.
_TINY = {"d_model": 16, "layers": 1, "heads": 2, "ffn": 32}
#: Whisper small's dimensions (244 M parameters), for benchmarks.
WHISPER_SMALL = {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072}


def whisper_language_codes() -> tuple[str, ...]:
    """Whisper's language tokens, in its tokenizer's order (faster-whisper's list)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


def _tokenizer(folder: Path) -> tuple[Any, dict[str, int]]:
    """A Whisper-layout ``tokenizers.Tokenizer`` and the ids of its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    learned = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = learned["model"]["vocab"]
    # Fillers no merge ever produces take the text ids up to Whisper's 50 257.
    filler = 0
    while len(vocab) < WHISPER_TEXT_TOKENS - 1:
        vocab[f"<|filler{filler}|>"] = len(vocab)
        filler += 1
    # Whisper's multilingual vocabulary ends its text tokens with an empty one (id 50256,
    # where the English-only GPT-2 vocabulary has <|endoftext|>); CTranslate2 tells a
    # multilingual model by that token.
    vocab[""] = len(vocab)
    learned["model"]["vocab"] = vocab
    tokenizer = Tokenizer.from_str(json.dumps(learned))
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in whisper_language_codes()),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens(specials)
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    assert ids["<|endoftext|>"] == WHISPER_TEXT_TOKENS
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer, ids


def build_tiny_whisper(
    folder: Path, *, n_mels: int = 80, seed: int = 0, dims: dict[str, int] | None = None
) -> Path:
    """Save a tiny random Whisper in faster-whisper's layout; returns the model folder.

    Args:
        folder: Where to work; the CTranslate2 model ends up in ``folder / "ct2"``.
        n_mels: Mel bins (80 like ``small``; 128 like ``large-v3``/``large-v3-turbo``).
        seed: Seeds the random weights.
        dims: ``d_model``, ``layers``, ``heads``, ``ffn`` (default: a few dozen units;
            :data:`WHISPER_SMALL` for a random model the size of ``small``).
    """
    size = {**_TINY, **(dims or {})}
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    hf_dir = folder / "hf"
    _, ids = _tokenizer(hf_dir)
    vocab_size = WHISPER_TEXT_TOKENS + len(ids) + _TIMESTAMPS
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    no_timestamps = ids["<|notimestamps|>"]
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=size["d_model"],
        encoder_layers=size["layers"],
        decoder_layers=size["layers"],
        encoder_attention_heads=size["heads"],
        decoder_attention_heads=size["heads"],
        encoder_ffn_dim=size["ffn"],
        decoder_ffn_dim=size["ffn"],
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=[220, eot],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    languages = whisper_language_codes()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        no_timestamps_token_id=no_timestamps,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in languages},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=[],
        begin_suppress_tokens=[220, eot],
        max_length=448,
    )
    model.save_pretrained(hf_dir)
    WhisperTokenizerFast(
        tokenizer_file=str(hf_dir / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in ids if t != "<|endoftext|>"],
    ).save_pretrained(hf_dir)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(hf_dir)

    out = folder / "ct2"
    TransformersConverter(
        str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(out), quantization="float32", force=True)
    return out
