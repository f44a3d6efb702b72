"""One transformer over each shopper's item history, trained BERT4Rec-style or SASRec-style.

- ``objective="bert4rec"``: bidirectional attention; random positions are replaced by a [MASK] item
  and predicted (cloze). At inference a [MASK] is appended after the history.
- ``objective="sasrec"``: causal attention; every position predicts the next item.

Scores are dot products with the (tied) item embedding table. Losses: full softmax cross-entropy,
sampled softmax over uniform negatives, or gBCE (gSASRec, Petrov & Macdonald 2023).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


@dataclass
class SeqRecConfig:
    n_items: int = 0
    """Number of real items; index 0 is padding and ``n_items + 1`` is the [MASK] item."""
    max_len: int = 50
    """Longest history the model reads; older items are dropped."""
    d_model: int = 64
    """Width of item embeddings and of the transformer."""
    n_heads: int = 2
    """Attention heads per layer."""
    n_layers: int = 2
    """Transformer layers."""
    ff_mult: int = 4
    """Feed-forward width as a multiple of ``d_model``."""
    dropout: float = 0.2
    """Dropout on embeddings, attention and feed-forward."""
    objective: str = "sasrec"
    """``sasrec`` (causal next item) or ``bert4rec`` (masked items)."""
    loss: str = "ce"
    """``ce`` (softmax over all items), ``sampled_softmax`` or ``gbce``."""
    n_negatives: int = 256
    """Uniform negatives per batch for ``sampled_softmax`` and ``gbce``."""
    gbce_t: float = 0.75
    """gBCE calibration t in [0, 1]; 0 is plain BCE."""
    mask_prob: float = 0.2
    """BERT4Rec: fraction of history positions masked in training."""

    def __post_init__(self):
        if self.objective not in ("sasrec", "bert4rec"):
            raise ValueError(f"objective must be 'sasrec' or 'bert4rec', not {self.objective!r}")
        if self.loss not in ("ce", "sampled_softmax", "gbce"):
            raise ValueError(f"loss must be 'ce', 'sampled_softmax' or 'gbce', not {self.loss!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @classmethod
    def from_dict(cls, d: dict) -> "SeqRecConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SeqRecConfig field(s): {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mask_token(self) -> int:
        return self.n_items + 1


class SeqRec(nn.Module):
    def __init__(self, cfg: SeqRecConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = nn.Embedding(cfg.n_items + 2, d, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ff_mult * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def attention_mask(self, seq: torch.Tensor) -> torch.Tensor:
        """Boolean (B*heads, L, L), True where attention is blocked.

        Padding keys are blocked, but every position may attend to itself, so no row is fully
        blocked (a fully blocked row gives NaN in softmax and poisons the gradients).
        """
        B, L = seq.shape
        blocked = (seq == PAD).unsqueeze(1).expand(B, L, L)
        if self.cfg.objective == "sasrec":
            future = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), diagonal=1)
            blocked = blocked | future
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        blocked = blocked & ~eye
        return blocked.repeat_interleave(self.cfg.n_heads, dim=0)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, d) for left-padded item sequences (B, L)."""
        L = seq.shape[1]
        pos = torch.arange(L, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        x = self.emb_drop(x) * (seq != PAD).unsqueeze(-1)
        x = self.encoder(x, mask=self.attention_mask(seq))
        return self.norm(x)

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of padding + real items (the [MASK] item is never a candidate)."""
        return self.item_emb.weight[: self.cfg.n_items + 1]

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.item_weights().T
        logits[..., PAD] = float("-inf")
        return logits

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss at positions where ``targets`` is not padding."""
        keep = targets != PAD
        h, y = hidden[keep], targets[keep]
        cfg = self.cfg
        if cfg.loss == "ce":
            return F.cross_entropy(self.scores(h), y)
        negs = torch.randint(1, cfg.n_items + 1, (cfg.n_negatives,), device=h.device, generator=generator)
        w = self.item_weights()
        pos_logit = (h * w[y]).sum(-1, keepdim=True)
        neg_logit = h @ w[negs].T
        neg_logit = neg_logit.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
        if cfg.loss == "sampled_softmax":
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device))
        alpha = cfg.n_negatives / max(cfg.n_items - 1, 1)
        beta = alpha * (cfg.gbce_t * (1 - 1 / alpha) + 1 / alpha)
        pos_term = beta * F.softplus(-pos_logit.squeeze(1))
        neg_term = F.softplus(neg_logit).masked_fill(torch.isinf(neg_logit), 0.0).sum(-1)
        return (pos_term + neg_term).mean()

    @torch.no_grad()
    def next_item_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """Scores over items (B, n_items + 1) for the item after each left-padded history (B, L)."""
        if self.cfg.objective == "bert4rec":
            mask = torch.full_like(histories[:, :1], self.cfg.mask_token)
            histories = torch.cat([histories[:, 1:], mask], dim=1)
        return self.scores(self(histories)[:, -1])


def left_pad(seqs: list[list[int]], length: int) -> torch.Tensor:
    out = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if s:
            out[i, length - len(s):] = torch.as_tensor(s, dtype=torch.long)
    return out


def save_model(model: SeqRec, folder: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model": model.cfg.to_dict(), **(extra or {})}, indent=2))


def load_model(folder: str | Path, device: str = "cpu") -> SeqRec:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = SeqRecConfig.from_dict(json.loads((folder / "config.json").read_text())["model"])
    model = SeqRec(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device))
    return model.to(device).eval()
