"""MiniLM cross-encoder (click head + purchase/relevance head) and bi-encoder, with LoRA and export.

Both models start from the same pretrained MiniLM (``BertModel``). The cross-encoder reads the pair
``[CLS] text_a [SEP] text_b [SEP]`` and puts two linear heads on the [CLS] state: a click logit and a
second output (purchase logit, or graded relevance in [0, 1]). The bi-encoder mean-pools the token
states into an L2-normalised vector, so a product's vector can be computed offline.

Saved model folders hold ``model.safetensors`` (LoRA already merged), ``config.json`` (the BERT
config, the head layout and the ranker config) and the tokenizer files, and load without pickle.
int8 dynamic quantisation (``torch.ao.quantization.quantize_dynamic`` on the encoder's ``nn.Linear``) is applied at
load time: its packed weights are not a safetensors format, and quantising takes well under a second.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shoprec.ranker.config import LoraSettings, RankerConfig

FORMAT = "shoprec-ranker/1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def load_encoder(folder: str):
    from transformers import BertModel

    return BertModel.from_pretrained(folder, add_pooling_layer=False)


def add_lora(encoder: nn.Module, lora: LoraSettings) -> nn.Module:
    """Freeze ``encoder`` and wrap it with peft LoRA adapters (only the adapters are trainable)."""
    from peft import get_peft_model

    return get_peft_model(encoder, lora.peft_config())


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of a CrossEncoder/BiEncoder with LoRA merged into the encoder weights (peft ``merge_and_unload``)."""
    out = copy.deepcopy(model)
    if hasattr(out.encoder, "merge_and_unload"):
        out.encoder = out.encoder.merge_and_unload()
    return out


def encoder_config(encoder: nn.Module):
    base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    return base.config


class CrossEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, dropout: float = 0.1, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "segments"):
            raise ValueError(f"unknown cross-encoder pooling {pooling!r}")
        self.encoder, self.pooling = encoder, pooling
        hidden = encoder_config(encoder).hidden_size
        self.dropout = nn.Dropout(dropout)
        width = hidden if pooling == "cls" else 2 * hidden
        self.click_head = nn.Linear(width, 1)
        self.aux_head = nn.Linear(width, 1)
        if pooling == "segments":  # start at the cosine of the two texts' mean states (scaled), [CLS] part small
            with torch.no_grad():
                for head in (self.click_head, self.aux_head):
                    head.weight[:, :hidden].mul_(0.1)
                    head.weight[:, hidden:].fill_(1.0)
                    head.bias.zero_()

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(click logit, aux output), each (B,)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        h = states[:, 0]
        if self.pooling == "segments":
            if token_type_ids is None:
                raise ValueError("segments pooling needs token_type_ids")
            m = attention_mask.to(states.dtype)
            seg_b = token_type_ids.to(states.dtype) * m
            seg_a = (1.0 - token_type_ids.to(states.dtype)) * m
            seg_a[:, 0] = 0.0  # [CLS] is not part of text_a
            mean_a = F.normalize((states * seg_a.unsqueeze(-1)).sum(1) / seg_a.sum(1, keepdim=True).clamp(min=1.0), dim=-1)
            mean_b = F.normalize((states * seg_b.unsqueeze(-1)).sum(1) / seg_b.sum(1, keepdim=True).clamp(min=1.0), dim=-1)
            h = torch.cat([h, mean_a * mean_b], -1)
        h = self.dropout(h)
        return self.click_head(h).squeeze(-1), self.aux_head(h).squeeze(-1)


class BiEncoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        """Mean-pooled, L2-normalised vectors (B, hidden)."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)


def build_cross_encoder(cfg: RankerConfig, encoder: nn.Module | None = None) -> CrossEncoder:
    enc = encoder if encoder is not None else load_encoder(cfg.encoder_dir())
    if cfg.lora.enabled:
        enc = add_lora(enc, cfg.lora)
    return CrossEncoder(enc, pooling=cfg.cross_pooling)


def build_bi_encoder(cfg: RankerConfig, encoder: nn.Module | None = None) -> BiEncoder:
    enc = encoder if encoder is not None else load_encoder(cfg.encoder_dir())
    if cfg.lora.enabled:
        enc = add_lora(enc, cfg.lora)
    return BiEncoder(enc)


# ------------------------------------------------------------------ save / load
def _copy_tokenizer(src: str | Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (Path(src) / name).exists():
            shutil.copy(Path(src) / name, dst / name)


def save_model(model: CrossEncoder | BiEncoder, folder: str | Path, cfg: RankerConfig,
               tokenizer_dir: str | Path | None = None) -> Path:
    """Merge LoRA (on a copy) and write safetensors + config.json + tokenizer files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "cross" if isinstance(model, CrossEncoder) else "bi"
    out = merged_copy(model)
    state = {k: v.detach().cpu().contiguous() for k, v in out.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": FORMAT, "kind": kind})
    meta = {"format": FORMAT, "kind": kind, "encoder": encoder_config(out.encoder).to_dict(),
            "ranker": cfg.to_dict()}
    (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    _copy_tokenizer(tokenizer_dir or cfg.encoder_dir(), folder)
    return folder


def load_model(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}: not a {FORMAT} model folder")
    enc_cfg = {k: v for k, v in meta["encoder"].items() if k not in ("architectures", "transformers_version")}
    encoder = BertModel(BertConfig(**enc_cfg), add_pooling_layer=False)
    pooling = meta.get("ranker", {}).get("cross_pooling", "cls")
    model = CrossEncoder(encoder, pooling=pooling) if meta["kind"] == "cross" else BiEncoder(encoder)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device),
                                                strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise ValueError(f"{folder}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    return model.to(device).eval(), meta


def quantize_int8(model: nn.Module) -> nn.Module:
    """int8 dynamic quantisation of the encoder's nn.Linear layers (weights int8, activations quantised per
    batch). The one-output score heads stay float32: their output is the ranking signal itself, and on the
    Home Depot cross-encoder quantising them cut the rank correlation with float32 scores from 0.93 to 0.44
    (re-rank NDCG@10 0.9256 vs 0.9169) for no measurable speed."""
    model = copy.deepcopy(model).cpu().eval()
    layers = {name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and not name.endswith("_head")}
    return torch.ao.quantization.quantize_dynamic(model, layers, dtype=torch.qint8)


# ------------------------------------------------------------------ batching
def tokenize_pairs(tokenizer, text_a: list[str], text_b: list[str], max_len: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(list(text_a), list(text_b), truncation="longest_first", max_length=max_len,
                          padding=True, return_tensors="pt"))


def tokenize_texts(tokenizer, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class Ranker:
    """A loaded ranker: ``score`` pairs with the cross-encoder, ``encode`` texts with the bi-encoder."""

    def __init__(self, cross: CrossEncoder, tokenizer, cfg: RankerConfig, bi: BiEncoder | None = None,
                 device: str = "cpu"):
        self.cross, self.tokenizer, self.cfg, self.bi, self.device = cross, tokenizer, cfg, bi, device

    @property
    def rank_head(self) -> str:
        return "aux" if self.cfg.aux_task == "relevance" else "click"

    @torch.inference_mode()
    def score(self, text_a: list[str], text_b: list[str], head: str = "click", batch_size: int = 128) -> np.ndarray:
        """Per pair: click probability (``head="click"``), purchase probability or relevance in [0, 1] (``"aux"``)."""
        if len(text_a) != len(text_b):
            raise ValueError("text_a and text_b differ in length")
        # similar lengths in one batch (less padding); the result is in the given order
        order = np.argsort([len(a) + len(b) for a, b in zip(text_a, text_b)], kind="stable")
        out = np.zeros(len(text_a), dtype=np.float32)
        for i in range(0, len(text_a), batch_size):
            idx = order[i:i + batch_size]
            enc = tokenize_pairs(self.tokenizer, [text_a[j] for j in idx], [text_b[j] for j in idx], self.cfg.max_len)
            click, aux = self.cross(**{k: v.to(self.device) for k, v in enc.items()})
            out[idx] = self.head_scores(click, aux, head).cpu().numpy()
        return out

    def head_scores(self, click: torch.Tensor, aux: torch.Tensor, head: str) -> torch.Tensor:
        """The cross-encoder's logits as scores: click or purchase probability, or relevance in [0, 1]."""
        if head == "click":
            return torch.sigmoid(click.float())
        return torch.sigmoid(aux.float()) if self.cfg.aux_task == "purchase" else aux.float()

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised bi-encoder vectors (N, hidden), float32."""
        if self.bi is None:
            raise ValueError("this ranker has no bi-encoder")
        return encode_texts(self.bi, self.tokenizer, texts, self.cfg.bi_max_len, batch_size, self.device)


@torch.inference_mode()
def encode_texts(bi: BiEncoder, tokenizer, texts: list[str], max_len: int, batch_size: int = 256,
                 device: str = "cpu") -> np.ndarray:
    bi.eval()
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    vecs = np.zeros((len(texts), encoder_config(bi.encoder).hidden_size), dtype=np.float32)
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        enc = tokenize_texts(tokenizer, [texts[j] for j in idx], max_len)
        vecs[idx] = bi(**{k: v.to(device) for k, v in enc.items()}).float().cpu().numpy()
    return vecs


def load_ranker(model_dir: str | Path, int8: bool | None = None, device: str = "cpu") -> Ranker:
    """Load a saved ranker folder (cross-encoder at the top, bi-encoder under ``bi_encoder/`` if present).

    ``int8``: quantise the Linear layers for CPU scoring (default: the config's ``export_int8``).
    """
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    cross, meta = load_model(model_dir, device)
    cfg = RankerConfig.from_dict(meta["ranker"])
    bi = load_model(model_dir / "bi_encoder", device)[0] if (model_dir / "bi_encoder" / "config.json").exists() else None
    if int8 if int8 is not None else cfg.export_int8:
        cross = quantize_int8(cross)
        bi = quantize_int8(bi) if bi is not None else None
        device = "cpu"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return Ranker(cross, tok, cfg, bi, device)
