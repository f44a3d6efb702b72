"""One transformer over each shopper's item history, trained BERT4Rec-style or SASRec-style.

- ``objective="bert4rec"``: bidirectional attention; random positions are replaced by a [MASK] item
  and predicted (cloze). At inference a [MASK] is appended after the history.
- ``objective="sasrec"``: causal attention; every position predicts the next item.

With ``filter_c`` > 0 every layer also runs BSARec's frequency-domain filter (Shin et al., AAAI 2024) beside the
attention and mixes the two, ``filter_alpha * filter + (1 - filter_alpha) * attention``. The filter mixes every
position with every other, later ones too, so a position's state is no longer causal: such a model is trained
on the last position of each history only (``TrainConfig.train_examples: prefixes``), as BSARec is.

Scores are dot products with the (tied) item embedding table. With ``item_attributes`` an item's
embedding is its own vector plus the mean of its catalog attributes' vectors (category, brand, ...), so
items seen a few times borrow from the others of their brand and category. Losses: full softmax cross-entropy,
sampled softmax over uniform negatives, or gBCE (gSASRec, Petrov & Macdonald 2023).

The layers call ``scaled_dot_product_attention`` with one (B, 1, L, L) mask for all heads. Positions are
counted from the end of the (left-padded) history, so a batch can be cut to its longest history
(:func:`trim`) without changing any state: on short-history data (Beauty: 8.9 items on average, max_len 50)
that removes most of the work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shoprec import config

PAD = 0

# Experiment options that left the library; a saved model whose config names one switched off still loads.
RETIRED_FIELDS = {"item_dropout": 0.0, "label_smoothing": 0.0}


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
    emb_norm: bool = False
    """LayerNorm on the embeddings before the first layer (SASRec/RecBole style)."""
    emb_scale: bool = True
    """Multiply item embeddings by sqrt(d_model) before adding position embeddings."""
    norm_first: bool = True
    """Pre-LayerNorm layers plus a final LayerNorm (False: post-LayerNorm, as in the SASRec paper)."""
    init_std: float = 0.02
    """Std of the normal initialisation of embeddings and linear layers."""
    score_temperature: float = 0.0
    """If > 0, a score is the cosine of the hidden state and the item embedding divided by this
    temperature (e.g. 0.05) instead of their dot product: item popularity can no longer grow an
    embedding's norm, and the temperature alone sets how peaked the softmax is (0: dot product)."""
    item_attributes: bool = False
    """Add to every item's embedding (input and output) the mean embedding of its catalog attributes
    (``attributes`` column of the features' items: category, brand and any attribute tokens), learned and
    shared by all items that have them. Helps rare items, which otherwise have little to learn from."""
    n_attributes: int = 0
    """Size of the attribute vocabulary (set from the features when ``item_attributes`` is on; 0 is padding)."""
    max_item_attributes: int = 0
    """Most attributes of one item (set from the features; the width of the item-to-attributes table)."""
    id_dropout: float = 0.0
    """Training only, with ``item_attributes``: each item's own vector is left out (only its attributes
    remain) with this probability, drawn per item each time the item table is built, so the attribute
    vectors learn to stand in for items that are seen rarely (0: off)."""
    filter_c: int = 0
    """BSARec's ``c``: each layer's frequency filter keeps the lowest ``c // 2 + 1`` frequencies of the real FFT
    over ``max_len`` positions (padding zeroed) as its low pass, and adds the rest (the high pass) scaled by a
    learned per-channel ``beta**2``; BSARec's Beauty setting is 5. 0: no filter (attention only, the model as it
    was before the option). A filtered state sees later positions, so training uses last positions only."""
    filter_alpha: float = 0.7
    """With ``filter_c``: a layer's mixing output is ``filter_alpha * filter + (1 - filter_alpha) * attention``
    (BSARec's ``alpha``; 1 would be the filter alone, 0 attention alone)."""
    ff_inner_dropout: bool = True
    """Dropout between the feed-forward's two linear layers as well as after them. BSARec's feed-forward has
    dropout after them only (False)."""

    def __post_init__(self):
        if self.objective not in ("sasrec", "bert4rec"):
            raise ValueError(f"objective must be 'sasrec' or 'bert4rec', not {self.objective!r}")
        if self.loss not in ("ce", "sampled_softmax", "gbce"):
            raise ValueError(f"loss must be 'ce', 'sampled_softmax' or 'gbce', not {self.loss!r}")
        if not 0 <= self.id_dropout < 1 or (self.id_dropout and not self.item_attributes):
            raise ValueError(f"id_dropout must be in [0, 1) and needs item_attributes, not {self.id_dropout}")
        if self.score_temperature < 0:
            raise ValueError(f"score_temperature must be >= 0, not {self.score_temperature}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.filter_c < 0 or not 0 <= self.filter_alpha <= 1:
            raise ValueError(f"filter_c must be >= 0 and filter_alpha in [0, 1], not {self.filter_c}, "
                             f"{self.filter_alpha}")

    @property
    def causal_states(self) -> bool:
        """Whether a position's state depends on earlier positions only (SASRec without the filter), so every
        position of a training sequence may predict its next item; otherwise only the last one may."""
        return self.objective == "sasrec" and not self.filter_c

    @classmethod
    def from_dict(cls, d: dict) -> SeqRecConfig:
        d = config.drop_retired(cls, d, RETIRED_FIELDS)
        config.check_fields(cls, d)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mask_token(self) -> int:
        return self.n_items + 1


def low_pass_matrix(n: int, c: int) -> torch.Tensor:
    """(n, n) real matrix of BSARec's low pass over ``n`` positions: ``irfft(rfft(x, norm="ortho")`` with the
    frequencies from ``c // 2 + 1`` on zeroed, ``norm="ortho")``, as one circulant matrix (x: (n, d) -> M @ x)."""
    spectrum = torch.fft.rfft(torch.eye(n, dtype=torch.float64), dim=0, norm="ortho")
    spectrum[c // 2 + 1:] = 0
    return torch.fft.irfft(spectrum, n=n, dim=0, norm="ortho").float()


class FrequencyFilter(nn.Module):
    """BSARec's FrequencyLayer without its residual and norm: ``low + beta**2 * (x - low)``, where ``low``
    keeps the lowest ``c // 2 + 1`` frequencies of the real FFT of ``x`` along the positions.

    The FFT runs over ``max_len`` positions with padding set to zero. A low pass is a circular convolution,
    which commutes with shifting the sequence round the circle, so a left-padded batch cut to its longest history
    (:func:`trim`) gives the same states as at full width, and padding adds nothing to real positions (BSARec
    passes its padding's position embeddings through the FFT). It is applied as the FFT's (max_len, max_len)
    matrix: the same numbers, one matmul, no complex dtype under bf16 autocast.
    """

    def __init__(self, d: int, max_len: int, c: int):
        super().__init__()
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, d))
        self.register_buffer("low_pass", low_pass_matrix(max_len, c), persistent=False)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, d) with L <= max_len, left-padded; ``real`` (B, L, 1) is False at padding."""
        L = x.shape[1]
        x = x * real
        # the trimmed columns stand for a left-padded max_len frame; shifted round the circle the real
        # positions are its first L, and the zeros beyond them contribute nothing
        low = torch.matmul(self.low_pass[:L, :L].to(x.dtype), x)
        return low + self.sqrt_beta ** 2 * (x - low)


class Block(nn.Module):
    """One transformer layer (attention + feed-forward, residual, pre- or post-LayerNorm) on SDPA, with BSARec's
    frequency filter beside the attention when ``filter_c`` > 0.

    ``scaled_dot_product_attention`` takes one (B, 1, L, L) mask for all heads and picks a fused kernel,
    which is several times faster on a CPU than ``nn.MultiheadAttention`` with a per-head mask.
    """

    def __init__(self, d: int, heads: int, ff: int, dropout: float, norm_first: bool, max_len: int = 50,
                 filter_c: int = 0, filter_alpha: float = 0.7, ff_inner_dropout: bool = True):
        super().__init__()
        self.heads, self.p, self.norm_first = heads, dropout, norm_first
        self.alpha, self.ff_inner_dropout = filter_alpha, ff_inner_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.filter = FrequencyFilter(d, max_len, filter_c) if filter_c else None
        # post-LN: BSARec's filter has its own LayerNorm over (filter output + input), like the attention's
        self.norm_filter = nn.LayerNorm(d) if filter_c and not norm_first else None

    def attend(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0)
        return self.drop(self.out(a.transpose(1, 2).reshape(B, L, d)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = F.gelu(self.ff1(x))
        return self.drop(self.ff2(self.drop(inner) if self.ff_inner_dropout else inner))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """``real`` (B, L, 1), False at padding: needed with the filter only."""
        if self.filter is None:
            if self.norm_first:
                x = x + self.attend(self.norm1(x), allowed)
                return x + self.feed_forward(self.norm2(x))
            x = self.norm1(x + self.attend(x, allowed))
            return self.norm2(x + self.feed_forward(x))
        a = self.alpha
        if self.norm_first:
            n = self.norm1(x)
            x = x + a * self.drop(self.filter(n, real)) + (1 - a) * self.attend(n, allowed)
            return x + self.feed_forward(self.norm2(x))
        # BSARec: alpha * LN(x + dropout(filter(x))) + (1 - alpha) * LN(x + attention(x)), then the feed-forward
        x = a * self.norm_filter(x + self.drop(self.filter(x, real))) + (1 - a) * self.norm1(x + self.attend(x, allowed))
        return self.norm2(x + self.feed_forward(x))


class SeqRec(nn.Module):
    def __init__(self, cfg: SeqRecConfig, item_attributes: torch.Tensor | None = None):
        """``item_attributes``: (n_items + 2, max_item_attributes) attribute ids per item index, 0-padded
        (only with ``cfg.item_attributes``; a loaded model gets it from its saved state)."""
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = nn.Embedding(cfg.n_items + 2, d, padding_idx=PAD)
        self.attr_emb = None
        if cfg.item_attributes:
            shape = (cfg.n_items + 2, max(1, cfg.max_item_attributes))
            if item_attributes is None:
                item_attributes = torch.zeros(shape, dtype=torch.long)
            if tuple(item_attributes.shape) != shape:
                raise ValueError(f"item_attributes has shape {tuple(item_attributes.shape)}, expected {shape}")
            self.register_buffer("item_attrs", item_attributes.long().clone())
            self.attr_emb = nn.EmbeddingBag(cfg.n_attributes + 1, d, mode="mean", padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_norm = nn.LayerNorm(d) if cfg.emb_norm else None
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.ff_mult * d, cfg.dropout, cfg.norm_first, cfg.max_len,
                                          cfg.filter_c, cfg.filter_alpha, cfg.ff_inner_dropout)
                                    for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=cfg.init_std)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)
        nn.init.normal_(self.pos_emb.weight, std=cfg.init_std)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
            if self.attr_emb is not None:
                nn.init.normal_(self.attr_emb.weight, std=cfg.init_std)
                self.attr_emb.weight[PAD].zero_()

    def item_table(self) -> torch.Tensor:
        """Embeddings of all item indices (padding, items, [MASK]): own vector + mean attribute vector."""
        if self.attr_emb is None:
            return self.item_emb.weight
        own = self.item_emb.weight
        if self.training and self.cfg.id_dropout:
            own = own * (torch.rand(own.shape[0], 1, device=own.device) >= self.cfg.id_dropout)
        # a bag of only padding gives a zero vector, so items without attributes keep their own vector
        return own + self.attr_emb(self.item_attrs)

    def attention_mask(self, seq: torch.Tensor) -> torch.Tensor:
        """Boolean (B, 1, L, L), True where a query position may attend to a key position.

        Padding keys are blocked, but every position may attend to itself, so no row is fully
        blocked (a fully blocked row gives NaN in softmax and poisons the gradients).
        """
        B, L = seq.shape
        allowed = (seq != PAD).view(B, 1, 1, L).expand(B, 1, L, L)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        if self.cfg.objective == "sasrec":
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
        return allowed | eye

    def forward(self, seq: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, d) for left-padded item sequences (B, L), L <= max_len. ``item_table``: the
        :meth:`item_table` already built for this step (with attributes, building it reads every item's).

        Positions count back from the end (the last column is always position ``max_len - 1``), so a
        batch cut to its longest sequence (:func:`trim`) gives exactly the states of the full-width one.
        """
        L = seq.shape[1]
        pos = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=seq.device)
        if self.attr_emb is None:
            x = self.item_emb(seq)
        else:
            x = F.embedding(seq, self.item_table() if item_table is None else item_table)
        if self.cfg.emb_scale:
            x = x * math.sqrt(self.cfg.d_model)
        x = x + self.pos_emb(pos)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        real = (seq != PAD).unsqueeze(-1)
        x = self.emb_drop(x) * real
        allowed = self.attention_mask(seq)
        for block in self.blocks:
            x = block(x, allowed, real)
        return self.norm(x)

    def item_weights(self, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Output embeddings of padding + real items (the [MASK] item is never a candidate)."""
        return (self.item_table() if item_table is None else item_table)[: self.cfg.n_items + 1]

    def output_weights(self, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Item embeddings as the scores use them: unit length over the temperature in cosine mode."""
        w = self.item_weights(item_table)
        if self.cfg.score_temperature:
            w = F.normalize(w, dim=-1) / self.cfg.score_temperature
        return w

    def query(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(hidden, dim=-1) if self.cfg.score_temperature else hidden

    def scores(self, hidden: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.query(hidden) @ self.output_weights(item_table).T
        logits[..., PAD] = float("-inf")
        return logits

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean loss over the positions where ``targets`` is not padding."""
        keep = targets != PAD
        if not bool(keep.any()):  # e.g. a batch of one-item histories: nothing to predict, zero gradient
            return hidden.sum() * 0.0 + self.item_weights().sum() * 0.0
        h, y = hidden[keep], targets[keep]
        cfg = self.cfg
        if cfg.loss == "ce":
            return F.cross_entropy(self.scores(h), y)
        negs = torch.randint(1, cfg.n_items + 1, (cfg.n_negatives,), device=h.device, generator=generator)
        h, w = self.query(h), self.output_weights()
        pos_logit = (h * w[y]).sum(-1, keepdim=True)
        neg_logit = h @ w[negs].T
        neg_logit = neg_logit.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
        if cfg.loss == "sampled_softmax":
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            return F.cross_entropy(logits.masked_fill(torch.isinf(logits), -1e4),
                                   torch.zeros(len(y), dtype=torch.long, device=h.device))
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
            histories = torch.cat([histories[:, -(self.cfg.max_len - 1):], mask], dim=1)
        (histories,) = trim(histories)
        table = self.item_table() if self.attr_emb is not None else None  # built once for both sides
        return self.scores(self(histories, table)[:, -1], table)


def trim(*batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of the first (left-padded) tensor.

    Padding keys are masked, so the model's states at the remaining positions are unchanged; it saves
    most of the work on short histories. All tensors are cut the same way.
    """
    real = (batch[0] != PAD).any(0)
    first = int(real.to(torch.int8).argmax()) if bool(real.any()) else batch[0].shape[1] - 1
    return tuple(t[:, first:] for t in batch)


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


class SeqRecEnsemble(nn.Module):
    """Members scored as one model: an item's score is the mean of the members' log-softmax scores.

    Log-probabilities rather than raw scores, so members with other score scales (a temperature, a dot
    product) weigh the same. Callers read ``cfg`` for ``max_len`` and ``n_items``, which members share.
    """

    def __init__(self, members: list[SeqRec]):
        super().__init__()
        shapes = {(m.cfg.n_items, m.cfg.max_len) for m in members}
        if not members or len(shapes) != 1:
            raise ValueError(f"ensemble members must share n_items and max_len; got {sorted(shapes)}")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    @torch.no_grad()
    def next_item_scores(self, histories: torch.Tensor) -> torch.Tensor:
        total = None
        for m in self.members:
            s = torch.log_softmax(m.next_item_scores(histories).float(), -1)
            total = s if total is None else total + s
        return total / len(self.members)


ENSEMBLE_FILE = "ensemble.json"


def load_model(folder: str | Path, device: str = "cpu") -> SeqRec | SeqRecEnsemble:
    """The model saved in ``folder``; an ensemble folder (``ensemble.json`` naming member folders inside it)
    gives a :class:`SeqRecEnsemble`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / ENSEMBLE_FILE).exists():
        names = json.loads((folder / ENSEMBLE_FILE).read_text())["members"]
        return SeqRecEnsemble([load_model(folder / n, device) for n in names]).to(device).eval()
    cfg = SeqRecConfig.from_dict(json.loads((folder / "config.json").read_text())["model"])
    model = SeqRec(cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device))
    return model.to(device).eval()
