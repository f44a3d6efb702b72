"""The settings of the one fit loop (:func:`shoprec.trainer.loop.fit`), in a module of their own so that a model's
configuration (``shoprec.ranker.config``) can name them without importing the training loop and torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shoprec import config


@dataclass
class FitConfig:
    epochs: int = 3
    """Most passes over the training data."""
    batch_size: int = 32
    """Examples per micro-batch on each process (global batch: this x world size x grad_accum)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 2e-4
    """Peak AdamW learning rate (reached after warmup)."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to weight matrices only (not biases or LayerNorm weights)."""
    warmup_ratio: float = 0.1
    """Fraction of all optimizer steps spent warming up linearly from 0; then linear decay to 0."""
    lr_schedule: str = "linear"
    """``linear``: warmup then linear decay to 0 over all epochs; ``constant``: ``lr`` throughout (after any warmup).
    Early-stopped runs with many epochs (the sequential recommender) train at a constant rate."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0: no clipping)."""
    patience: int = 2
    """Stop after this many epochs without a better validation ``metric``."""
    metric: str = "loss"
    """Key of ``evaluate_fn``'s result used for early stopping and for choosing the best epoch."""
    mode: str = "min"
    """``min`` or ``max``: whether a smaller or a larger ``metric`` is better."""
    fgm_epsilon: float = 0.0
    """FGM adversarial perturbation size on the word-embedding output (0: off). Costs a second backward pass."""
    fgm_module: str = "word_embeddings"
    """Name (suffix) of the embedding module FGM perturbs."""
    seed: int = 0
    """Seed for shuffling and initialisation."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    max_steps_per_epoch: int = 0
    """Cut every epoch after this many micro-batches (0: the whole shard)."""
    max_train_minutes: float = 0.0
    """Stop starting new epochs after this much training time (0: no limit)."""
    max_elapsed_minutes: float = 0.0
    """Wall-clock budget of this attempt's epochs, validation included: after its first epoch, no epoch is started
    that would end past it at the pace of the last one, so an attempt fits a machine lent for a fixed time; a
    resumed run gets the budget afresh (0: no limit)."""
    progress: bool = True
    """Show a tqdm bar on rank 0."""
    threads: int = 0
    """CPU only: torch intra-op threads per process (0: leave as is). On a busy machine 1 thread can be several
    times faster than 2, because waiting OpenMP threads spin."""

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")
        if self.grad_accum < 1 or self.batch_size < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.lr_schedule not in ("linear", "constant"):
            raise ValueError(f"lr_schedule must be 'linear' or 'constant', not {self.lr_schedule!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> FitConfig:
        d = config.drop_retired(cls, dict(d or {}), {"ema_decay": 0.0, "find_unused_parameters": False})
        config.check_fields(cls, d)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
