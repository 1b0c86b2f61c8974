"""Builders of tiny, randomly initialised checkpoints saved exactly like real ones.

The engines' tests load these *by path* through the engines' real loading code, so
nothing is downloaded and the loaders are exercised for real. The same config
builders, called with production dimensions, give the benchmark its random-weight
stand-ins for Parakeet and NLLB-200 (``bench/bench_engines.py``).

Every builder is deterministic: the same arguments give the same weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

__all__ = [
    "NLLB_TEST_LANGUAGES",
    "shared_checkpoint",
    "build_tiny_nemo_asr",
    "build_tiny_nllb",
    "corpus_lines",
    "nemo_asr_config",
    "nllb_config",
    "train_sentencepiece",
]

_WORDS_EN = (
    "the weather is very good today i would like a cup of coffee please where is the "
    "train station we meet at noon my friend speaks spanish and english this room is "
    "quiet tomorrow will be better can you hear me now thank you very much good morning"
).split()
_WORDS_ES = (
    "el tiempo es muy bueno hoy quisiera una taza de cafe por favor donde esta la "
    "estacion de tren nos vemos a mediodia mi amigo habla espanol e ingles esta sala "
    "es tranquila manana sera mejor me oyes ahora muchas gracias buenos dias"
).split()

#: NLLB codes the tiny NLLB tokenizer knows (a subset keeps its vocabulary small; the
#: engine's table maps ISO codes onto whichever of these the checkpoint has).
NLLB_TEST_LANGUAGES = ("eng_Latn", "spa_Latn", "fra_Latn", "deu_Latn")


def corpus_lines(count: int = 400, seed: int = 0) -> list[str]:
    """``count`` deterministic pseudo-sentences in English and Spanish words."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        words = _WORDS_EN if i % 2 == 0 else _WORDS_ES
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))))
    return lines


def train_sentencepiece(
    folder: Path,
    *,
    vocab_size: int = 64,
    model_type: str = "bpe",
    user_defined_symbols: list[str] | None = None,
    prefix: str = "spm",
) -> Path:
    """Train a sentencepiece model on :func:`corpus_lines`; returns ``folder/prefix.model``."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"{prefix}_corpus.txt"
    text.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        user_defined_symbols=user_defined_symbols or [],
        # NLLB's fairseq layout: <s>=0 <pad>=1 </s>=2 <unk>=3 is what the HF tokenizer
        # re-maps anyway; these ids only have to be distinct.
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    return folder / f"{prefix}.model"


def shared_checkpoint(base: Path, name: str, build: Any) -> Path:
    """Build a checkpoint once per test session and share it between test modules.

    Args:
        base: The session's base temporary folder (``tmp_path_factory.getbasetemp()``).
        name: Names the checkpoint (its folder under ``base/tiny-checkpoints``).
        build: ``build(folder) -> path``; called only when the checkpoint is not there yet.
    """
    import json

    folder = base / "tiny-checkpoints" / name
    done = folder / "built.json"
    if done.exists():
        return Path(json.loads(done.read_text())["path"])
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(build(folder))
    done.write_text(json.dumps({"path": str(path)}))
    return path


# ------------------------------------------------------------------------------- NeMo


def nemo_asr_config(
    kind: str,
    tokenizer_dir: str | Path,
    *,
    d_model: int = 32,
    n_layers: int = 1,
    n_heads: int = 2,
    features: int = 80,
    subsampling_channels: int = 32,
    pred_hidden: int = 32,
    pred_layers: int = 1,
    joint_hidden: int = 32,
    conv_kernel_size: int = 9,
    streaming: bool = False,
) -> dict[str, Any]:
    """A FastConformer model config (``model:`` section of NeMo's YAML) as a dict.

    Args:
        kind: ``ctc`` (EncDecCTCModelBPE), ``hybrid`` (EncDecHybridRNNTCTCBPEModel, TDT
            off) or ``tdt`` (EncDecRNNTBPEModel with the TDT loss and decoder, Parakeet's).
        tokenizer_dir: Folder holding a sentencepiece ``tokenizer.model``.
        d_model, n_layers, ...: Sizes; defaults are tiny. Parakeet-TDT-0.6B is
            ``d_model=1024, n_layers=24, n_heads=8, features=128,
            subsampling_channels=256, pred_hidden=640, pred_layers=2, joint_hidden=640``;
            FastConformer hybrid large (``stt_en_fastconformer_hybrid_large_pc``) is
            ``d_model=512, n_layers=17, features=80, subsampling_channels=256,
            pred_hidden=640, joint_hidden=640``.
        streaming: A cache-aware streaming encoder, as ``stt_en_fastconformer_hybrid_large_
            streaming_multi`` has (causal convolutions and subsampling, chunked limited
            attention with two look-aheads, no feature normalisation), scaled down.
    """
    if kind not in ("ctc", "hybrid", "tdt"):
        raise ValueError(f"kind must be ctc, hybrid or tdt, not {kind!r}")
    encoder = {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": features,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": subsampling_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": 4,
        "self_attention_model": "rel_pos",
        "n_heads": n_heads,
        "att_context_size": [-1, -1],
        "xscaling": True,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": conv_kernel_size,
        "conv_norm_type": "batch_norm",
        "dropout": 0.0,
        "dropout_pre_encoder": 0.0,
        "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }
    if streaming:
        # Real one: [[70, 13], [70, 6], [70, 1], [70, 0]]; the left context must be a
        # multiple of (right + 1).
        encoder.update(
            att_context_size=[[15, 2], [15, 0]],
            att_context_style="chunked_limited",
            causal_downsampling=True,
            conv_context_size="causal",
            conv_norm_type="layer_norm",
        )
    cfg: dict[str, Any] = {
        "sample_rate": 16000,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "NA" if streaming else "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": features,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 0.0,
            "pad_to": 0,
        },
        "encoder": encoder,
        "train_ds": None,
        "validation_ds": None,
        "test_ds": None,
        "optim": None,
    }
    ctc_decoder = {
        "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
        "feat_in": d_model,
        "num_classes": -1,
        "vocabulary": [],
    }
    if kind == "ctc":
        cfg["decoder"] = ctc_decoder
        cfg["decoding"] = {"strategy": "greedy_batch"}
        return cfg

    tdt = kind == "tdt"
    durations = [0, 1, 2, 3, 4]
    cfg["model_defaults"] = {"enc_hidden": d_model, "pred_hidden": pred_hidden, "joint_hidden": joint_hidden}
    if tdt:
        cfg["model_defaults"]["tdt_durations"] = durations
    cfg["decoder"] = {
        "_target_": "nemo.collections.asr.modules.RNNTDecoder",
        "normalization_mode": None,
        "random_state_sampling": False,
        "blank_as_pad": True,
        "prednet": {"pred_hidden": pred_hidden, "pred_rnn_layers": pred_layers, "t_max": None, "dropout": 0.0},
    }
    cfg["joint"] = {
        "_target_": "nemo.collections.asr.modules.RNNTJoint",
        "log_softmax": None,
        "preserve_memory": False,
        "fuse_loss_wer": False,
        "num_extra_outputs": len(durations) if tdt else 0,
        "jointnet": {
            "joint_hidden": joint_hidden,
            "activation": "relu",
            "dropout": 0.0,
            "encoder_hidden": d_model,
            "pred_hidden": pred_hidden,
        },
    }
    cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}}
    if tdt:
        cfg["decoding"]["model_type"] = "tdt"
        cfg["decoding"]["durations"] = durations
        cfg["loss"] = {
            "loss_name": "tdt",
            "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": durations, "sigma": 0.02, "omega": 0.1},
        }
    else:
        cfg["loss"] = {"loss_name": "default"}
        cfg["aux_ctc"] = {
            "ctc_loss_weight": 0.3,
            "use_cer": False,
            "ctc_reduction": "mean_batch",
            "decoder": dict(ctc_decoder),
            "decoding": {"strategy": "greedy_batch"},
        }
    return cfg


_NEMO_CLASSES = {
    "ctc": "nemo.collections.asr.models.EncDecCTCModelBPE",
    "hybrid": "nemo.collections.asr.models.EncDecHybridRNNTCTCBPEModel",
    "tdt": "nemo.collections.asr.models.EncDecRNNTBPEModel",
}


def build_nemo_asr_model(kind: str, tokenizer_dir: Path, *, seed: int = 0, **sizes: Any) -> Any:
    """A NeMo ASR model of ``kind`` with random weights (see :func:`nemo_asr_config`)."""
    import importlib

    import torch
    from omegaconf import OmegaConf

    module_name, _, class_name = _NEMO_CLASSES[kind].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    torch.manual_seed(seed)
    model = cls(cfg=OmegaConf.create(nemo_asr_config(kind, tokenizer_dir, **sizes)))
    return model.eval()


def nemo_tokenizer(folder: Path, vocab_size: int = 64, *, cased_punctuated: bool = False) -> Path:
    """A NeMo-style BPE tokenizer folder (``tokenizer.model`` + ``vocab.txt``).

    Args:
        cased_punctuated: Train on sentences with capitals and punctuation, as the
            tokenizers of NeMo's PnC models are (lower-case, bare words otherwise).
    """
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    folder.mkdir(parents=True, exist_ok=True)
    lines = corpus_lines()
    if cased_punctuated:
        lines = [
            line[:1].upper() + line[1:].replace(" ", ", ", 1) + ("?" if i % 3 == 0 else ".")
            for i, line in enumerate(lines)
        ]
    text = folder / "text.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    create_spt_model(
        str(text), vocab_size, sample_size=-1, do_lower_case=not cased_punctuated,
        tokenizer_type="bpe", output_dir=str(folder),
    )
    return folder


def build_tiny_nemo_asr(
    folder: Path, kind: str = "ctc", *, punctuated: bool = False, streaming: bool = False
) -> Path:
    """Save a tiny random FastConformer ``kind`` model as ``folder/tiny_<kind>[_pnc][_streaming].nemo``.

    Args:
        punctuated: Give it a cased, punctuated tokenizer, as NeMo's PnC models have.
        streaming: Make it a cache-aware streaming model (see :func:`nemo_asr_config`).
    """
    name = f"tiny_{kind}{'_pnc' if punctuated else ''}{'_streaming' if streaming else ''}"
    tokenizer_dir = nemo_tokenizer(folder / f"{name}_tokenizer", cased_punctuated=punctuated)
    model = build_nemo_asr_model(kind, tokenizer_dir, streaming=streaming)
    path = folder / f"{name}.nemo"
    model.save_to(str(path))
    return path


# ------------------------------------------------------------------------------- NLLB


def nllb_config(vocab_size: int, *, d_model: int = 16, layers: int = 2, ffn: int = 32,
                heads: int = 2, max_positions: int = 1024, **extra: Any) -> Any:
    """An ``M2M100Config`` shaped like NLLB-200's (1.3B: d_model 1024, 24+24 layers,
    ffn 8192, 16 heads, vocab 256206; 600M: d_model 1024, 12+12 layers, ffn 4096)."""
    from transformers import M2M100Config

    return M2M100Config(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        max_position_embeddings=max_positions,
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        **extra,
    )


def build_tiny_nllb(
    folder: Path,
    *,
    languages: tuple[str, ...] = NLLB_TEST_LANGUAGES,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Save a tiny random NLLB-style model + ``NllbTokenizer`` in ``folder`` (HF layout).

    The tokenizer wraps a sentencepiece model trained here; NLLB's language codes are
    its extra special tokens, after the sentencepiece pieces, as in the real checkpoint.
    """
    import torch
    from transformers import M2M100ForConditionalGeneration, NllbTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # The hub checkpoints ship ``sentencepiece.bpe.model``; from it (and no
    # tokenizer.json yet) transformers builds the fast tokenizer, as for the real ones.
    train_sentencepiece(folder, vocab_size=96, prefix="sentencepiece.bpe")
    for leftover in ("sentencepiece.bpe_corpus.txt", "sentencepiece.bpe.vocab"):
        (folder / leftover).unlink()
    tokenizer = NllbTokenizer.from_pretrained(
        folder,
        src_lang=languages[0],
        tgt_lang=languages[1],
        additional_special_tokens=list(languages),
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(nllb_config(len(tokenizer), max_positions=max_positions))
    model.eval()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder

