"""Train the sequential recommender with PyTorch DDP.

Run it under torchrun (2 gloo workers on a CPU; one worker per GPU with NCCL on a GPU node):

    torchrun --standalone --nproc_per_node=2 --max-restarts=3 -m shoprec.seqrec.train \\
        --features features/ --out model/ --recipe configs/seqrec/builtin.yaml --overrides '{"epochs": 20}'

or from Python with :func:`shoprec.seqrec.launch.launch`, which builds exactly that command. The loop is shoprec's one
trainer, :func:`shoprec.trainer.loop.fit` (the ranker uses it too): each process reads and trains on only its
share of the shoppers (its rows of the features' shards, :func:`shoprec.data.shards.read_share`, shuffled by
``ShareSampler``), batched by length here; gradients are averaged by DDP; validation is split the same way and
summed. Only rank 0 logs, shows progress and writes files. A checkpoint
is written atomically after every epoch; a restarted run (``--max-restarts``) resumes from it. With
``--checkpoint-uri s3://...`` the checkpoints are also copied there after every epoch and restored from there
before training (:mod:`shoprec.trainer.checkpoints`), so a retry in a new pod resumes too.

Fault injection (tests only): ``SHOPREC_FAULT_KILL_AFTER_EPOCH=N`` ends the run after epoch N (0-based) is
checkpointed and stored, as a deleted pod would: rank 0 sends SIGTERM to its torchrun agent, which stops
every worker and exits non-zero without restarting them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from shoprec import config, metrics
from shoprec.data.features import load_items, load_sequences
from shoprec.data.shards import manifest, write_all
from shoprec.seqrec.model import PAD, SeqRec, SeqRecConfig, left_pad, save_model, trim
from shoprec.trainer.checkpoints import CheckpointStore
from shoprec.trainer.loop import FitConfig, all_reduce_sums, cleanup_distributed, fit, setup_distributed

log = logging.getLogger("shoprec.seqrec.train")
FAULT_ENV = "SHOPREC_FAULT_KILL_AFTER_EPOCH"


@dataclass
class TrainConfig:
    epochs: int = 20
    """Most passes over the training shoppers."""
    batch_size: int = 128
    """Shoppers per step on each process (the global batch is this times the world size)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_schedule: str = "constant"
    """``constant``: ``lr`` throughout (early stopping decides when to end); ``linear``: linear decay to 0
    over ``epochs`` (after ``warmup_ratio`` of them), so ``epochs`` is then a budget, not just a cap."""
    warmup_ratio: float = 0.0
    """Fraction of all optimizer steps spent warming up linearly from 0."""
    patience: int = 5
    """Stop after this many epochs without a better validation NDCG@10."""
    seed: int = 0
    """Seed for initialisation, shuffling, masking and negatives."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    eval_batch_size: int = 512
    """Users scored at once in evaluation."""
    max_train_minutes: float = 0.0
    """Stop training after this many minutes (0: no limit)."""
    max_elapsed_minutes: float = 0.0
    """Wall-clock budget for this attempt's epochs, validation included: after the first, no epoch starts that would
    end past it at the last epoch's pace (0: no limit). For a run that must fit a machine lent for a fixed time (a
    GPU); a run resumed from its checkpoint gets the budget afresh, so it can go on on the next machine."""
    train_examples: str = "sequence"
    """``sequence``: one example per shopper, every position of its training items predicting the next one
    (SASRec). ``prefixes``: as BSARec's dataset, every prefix of a shopper's last ``max_len`` training items is an
    example of its own, and only its last position is trained (to predict the item after the prefix; the first
    item is predicted from an empty history). Needed with ``model.filter_c``, whose states see later positions."""
    group_by_length: bool = True
    """Batch shoppers of similar history length together (within shuffled windows of 50 batches), so
    batches are cut to their longest history instead of max_len: same examples, a fraction of the work."""
    threads: int = 0
    """CPU threads per process (0: the cores divided by the processes on this node)."""
    warm_start: str = ""
    """Folder of a trained model (e.g. the champion's) whose weights start this run instead of random ones:
    items it knows keep their rows, new items start fresh (:mod:`shoprec.seqrec.warm_start`). A model of another
    architecture is not used: the run then starts from scratch and says why ("": always from scratch)."""
    model: SeqRecConfig = field(default_factory=SeqRecConfig)

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule must be 'constant' or 'linear', not {self.lr_schedule!r}")
        if self.train_examples not in ("sequence", "prefixes"):
            raise ValueError(f"train_examples must be 'sequence' or 'prefixes', not {self.train_examples!r}")
        if self.train_examples == "prefixes" and self.model.objective != "sasrec":
            raise ValueError("train_examples 'prefixes' is for objective 'sasrec' (next item after each prefix)")
        if self.model.objective == "sasrec" and not self.model.causal_states and self.train_examples != "prefixes":
            raise ValueError("model.filter_c mixes every position with later ones, so a position would see the item "
                             "it must predict: train it with train_examples 'prefixes' (last position only)")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        model = SeqRecConfig.from_dict(d.pop("model", {}))
        d = config.drop_retired(cls, d, {"ema_decay": 0.0})
        config.check_fields(cls, d)
        return cls(model=model, **d)


def read_recipe(recipe: str | Path | dict | None) -> dict:
    """A recipe as data: a mapping of TrainConfig fields (with a ``model:`` section, and ``members:`` for an
    ensemble), read from a YAML file when given a path (:func:`shoprec.config.read_mapping`)."""
    return config.read_mapping(recipe)


def load_recipe(recipe: str | Path | dict | None, **overrides) -> TrainConfig:
    """A single-model recipe (file or mapping) with explicit overrides on top, as a TrainConfig."""
    d = read_recipe(recipe)
    if "members" in d:
        raise ValueError(f"{_name(recipe)} is an ensemble recipe (it has members:): train it with "
                         "shoprec.seqrec.launch.launch, `shoprec train seqrec` or `python -m shoprec.seqrec.launch`, "
                         "which train one model per member")
    return TrainConfig.from_dict(config.merge(d, {"model": {}}, overrides))


def recipe_members(recipe: str | Path | dict | None) -> list[dict] | None:
    """The ``members:`` of an ensemble recipe; None for a single-model recipe."""
    d = read_recipe(recipe)
    if "members" not in d:
        return None
    members = d["members"]
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise ValueError(f"{_name(recipe)}: members must be a non-empty list of mappings of TrainConfig fields, "
                         f"one per member ({{}} for the recipe as it is); got {members!r}")
    return members


def merge_overrides(*layers: dict | None) -> dict:
    """Later layers win; ``model`` sections are merged field by field; None values are dropped."""
    return config.merge({"model": {}}, *layers)


def _name(recipe) -> str:
    return "the recipe" if isinstance(recipe, dict) else str(recipe)


class TrainSequences(Dataset):
    """One example per shopper: the training part of the sequence (all but the last two items)."""

    def __init__(self, seqs: list[list[int]], max_len: int):
        self.seqs = [s[:-2][-(max_len + 1):] for s in seqs if len(s) >= 3]

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i]


class TrainPrefixes(Dataset):
    """BSARec's training examples: every prefix of each shopper's last ``max_len`` training items (all but the
    last two), each ``history + [target]``; the first is ``[first item]`` (predicted from an empty history)."""

    def __init__(self, seqs: list[list[int]], max_len: int):
        self.seqs = [t[:i + 1] for s in seqs if len(s) >= 3 for t in [s[:-2][-max_len:]] for i in range(len(t))]

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i]


def item_attribute_table(items, n_items: int) -> tuple[torch.Tensor, list[str]]:
    """(n_items + 2, A) attribute ids per item index (row = ``idx``, 0-padded) and the attribute vocabulary
    (id k is ``vocab[k - 1]``), from the ``attributes`` column of the features' items."""
    if "attributes" not in items:
        raise ValueError("model.item_attributes is on but the features' items.parquet has no 'attributes' column "
                         "(features built before shoprec had item attributes: rebuild them)")
    vocab = sorted({t for tokens in items["attributes"] for t in tokens})
    ids = {t: k for k, t in enumerate(vocab, start=1)}
    width = max(1, max((len(tokens) for tokens in items["attributes"]), default=1))
    table = torch.zeros(n_items + 2, width, dtype=torch.long)
    for idx, tokens in zip(items["idx"], items["attributes"]):
        for j, t in enumerate(tokens):
            table[int(idx), j] = ids[t]
    return table, vocab


def make_batch(batch: list[list[int]], cfg: SeqRecConfig, gen: torch.Generator,
               last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, both (B, max_len), left-padded; target PAD means 'no loss here'. ``last_only``
    (``train_examples: prefixes``): each example's last item is the target of the last position alone."""
    if last_only:
        inputs = left_pad([s[:-1] for s in batch], cfg.max_len)
        targets = torch.zeros_like(inputs)
        targets[:, -1] = torch.as_tensor([s[-1] for s in batch], dtype=torch.long)
        return inputs, targets
    if cfg.objective == "sasrec":
        inputs, targets = left_pad([s[:-1] for s in batch], cfg.max_len), left_pad([s[1:] for s in batch], cfg.max_len)
        return inputs, targets
    seq = left_pad(batch, cfg.max_len)
    real = seq != PAD
    masked = (torch.rand(seq.shape, generator=gen) < cfg.mask_prob) & real
    # Always mask the last item of some sequences: that is the position used at inference.
    last = torch.rand(seq.shape[0], generator=gen) < cfg.mask_prob
    masked[:, -1] |= last & real[:, -1]
    none = ~masked.any(1) & real.any(1)
    masked[none, -1] = True
    inputs = seq.masked_fill(masked, cfg.mask_token)
    targets = seq.masked_fill(~masked, PAD)
    return inputs, targets


def length_grouped_batches(indices: list[int], lengths: list[int], batch_size: int, gen: torch.Generator,
                           window: int = 50) -> list[list[int]]:
    """Batches of (already shuffled) ``indices``: each window of ``window`` batches is sorted by length
    and cut into batches, then all batches are shuffled. Every index is used exactly once."""
    batches = []
    for w in range(0, len(indices), window * batch_size):
        chunk = sorted(indices[w:w + window * batch_size], key=lambda i: lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def evaluate_split(model: SeqRec, seqs: list[list[int]], split: str, batch_size: int, device,
                   rank: int = 0, world: int = 1, remove_history: bool = True) -> dict[str, float]:
    """Leave-one-out metrics summed over this process's share of users (``split``: valid or test).
    ``remove_history``: the user's earlier items are not candidates (shoprec's protocol); False ranks them too,
    as RecBole's full-sort protocol for sequential models does (a repeat target can then be hit)."""
    cut = 2 if split == "valid" else 1
    # sorted by length, so each batch is cut to about its own length; the sums do not depend on order
    mine = sorted((s for s in seqs[rank::world] if len(s) >= 3), key=lambda s: min(len(s), model.cfg.max_len + cut))
    sums: dict[str, float] = {}
    model.eval()
    for i in range(0, len(mine), batch_size):
        chunk = mine[i:i + batch_size]
        histories = [s[:-cut] for s in chunk]
        targets = torch.tensor([s[-cut] for s in chunk], dtype=torch.long)
        scores = model.next_item_scores(left_pad(histories, model.cfg.max_len).to(device)).float().cpu()
        ranks = metrics.target_ranks(scores, targets, exclude=histories if remove_history else None)
        sums = metrics.add(sums, metrics.metric_sums(ranks))
    return sums


def _all_reduce_sums(sums: dict[str, float], device) -> dict[str, float]:
    """Metric sums over all processes (every key present, even on a process with no users)."""
    zero = metrics.metric_sums(torch.zeros(0))
    return all_reduce_sums({k: sums.get(k, 0.0) for k in sorted(zero)}, device)


def restore_checkpoints(store: CheckpointStore | None, ckpt_dir: Path) -> None:
    """Local rank 0 of every node copies the stored checkpoints into ``ckpt_dir``; the others wait for it."""
    import torch.distributed as dist

    if store is not None and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        n = store.restore(ckpt_dir)
        if n:
            log.info("restored %d checkpoint file(s) from %s", n, store.uri)
        else:
            log.info("no checkpoint at %s yet: training from the start", store.uri)
    if dist.is_initialized():
        dist.barrier()


def inject_fault(epoch: int) -> None:
    """The ``SHOPREC_FAULT_KILL_AFTER_EPOCH`` test hook (see the module docstring); call it on rank 0 only."""
    if os.environ.get(FAULT_ENV, "") != str(epoch):
        return
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        raise RuntimeError(f"{FAULT_ENV}={epoch}: fault injected after epoch {epoch} (not under torchrun)")
    log.warning("%s=%d: stopping the torchrun agent (pid %d) as a deleted pod would", FAULT_ENV, epoch, os.getppid())
    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(120)  # the agent stops this worker now; nothing more may be trained or stored
    raise RuntimeError(f"{FAULT_ENV}: the torchrun agent did not stop this worker")


def train(features: str | Path, out: str | Path, config: TrainConfig | None = None, resume: bool = True,
          progress: bool = True, checkpoint_uri: str | None = None) -> dict:
    """Train on ``features`` with :func:`shoprec.trainer.loop.fit` and write the best model to ``out``; returns the
    run summary (rank 0; None on the other ranks). ``checkpoint_uri`` (``s3://...``): mirror the checkpoints
    there after every epoch and resume from there (:mod:`shoprec.trainer.checkpoints`)."""
    cfg = config or TrainConfig()
    world, rank, device = setup_distributed()
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    is_main = rank == 0
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    store = CheckpointStore(checkpoint_uri) if checkpoint_uri else None
    if resume:
        restore_checkpoints(store, ckpt_dir)

    # only this rank's share of the shoppers (rows of the features' shards): no process loads them all
    _, seqs = load_sequences(features, rank, world)
    n_shoppers = manifest(features)["rows"]["sequences"]
    items = load_items(features)
    cfg.model.n_items = len(items)
    attribute_table = None
    if cfg.model.item_attributes:
        attribute_table, vocab = item_attribute_table(items, len(items))
        cfg.model.n_attributes, cfg.model.max_item_attributes = len(vocab), attribute_table.shape[1]
        if is_main:
            log.info("item attributes: %d tokens, %d of %d items have some", len(vocab),
                     int((attribute_table[1:-1] > 0).any(1).sum()), len(items))
    torch.manual_seed(cfg.seed)
    model = SeqRec(cfg.model, attribute_table)
    warm = _warm_start(model, items, cfg.warm_start, is_main) if cfg.warm_start else None
    model = model.to(device)
    prefixes = cfg.train_examples == "prefixes"
    data = (TrainPrefixes if prefixes else TrainSequences)(seqs, cfg.model.max_len)
    lengths = [len(s) for s in data.seqs]
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)  # masking (BERT4Rec) and batching
    neg_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank + 1)  # sampled negatives
    if is_main:
        log.info("training %s/%s on %d shoppers (%d %s on this rank), %d items, world size %d, device %s",
                 cfg.model.objective, cfg.model.loss, n_shoppers, len(data), "prefixes" if prefixes else "shoppers",
                 len(items), world, device)

    def epoch_batches(indices: list[int], epoch: int) -> list[list[int]]:
        # Every random stream is a function of (seed, rank, epoch), so a run resumed from a checkpoint
        # replays the remaining epochs exactly as an uninterrupted run would.
        epoch_seed = cfg.seed * 1000003 + 7919 * epoch + 31 * rank
        gen.manual_seed(epoch_seed)
        neg_gen.manual_seed(epoch_seed + 1)
        torch.manual_seed(epoch_seed + 2)  # dropout
        if cfg.group_by_length:
            return length_grouped_batches(indices, lengths, cfg.batch_size, gen)
        return [indices[b:b + cfg.batch_size] for b in range(0, len(indices), cfg.batch_size)]

    def loss_fn(module, batch):
        inputs, targets = batch
        return model.loss(module(inputs).float(), targets, generator=neg_gen)

    def evaluate_valid(m: SeqRec) -> dict[str, float]:
        return metrics.finish(_all_reduce_sums(evaluate_split(m, seqs, "valid", cfg.eval_batch_size, device), device))

    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        warmup_ratio=cfg.warmup_ratio, lr_schedule=cfg.lr_schedule, max_grad_norm=0.0, patience=cfg.patience,
                        metric="ndcg@10", mode="max", seed=cfg.seed, amp=cfg.amp,
                        max_train_minutes=cfg.max_train_minutes, max_elapsed_minutes=cfg.max_elapsed_minutes,
                        progress=progress)
    epochs_this_attempt: list[int] = []

    def on_epoch_end(epoch: int, row: dict) -> None:
        epochs_this_attempt.append(epoch)
        if is_main:
            if store is not None:
                store.save(ckpt_dir)
            inject_fault(epoch)

    run = fit(model, data, lambda batch: trim(*make_batch(batch, cfg.model, gen, prefixes)), loss_fn, evaluate_valid, out,
              fit_cfg, resume=resume, save_best=lambda m, folder: save_model(m, folder), restore_best=False,
              on_epoch_end=on_epoch_end, epoch_batches=epoch_batches, local_share=True)

    from shoprec.seqrec.model import load_model

    best = load_model(ckpt_dir / "best", device=str(device))
    loaded = all_reduce_sums({f"{r:05d}": float(len(seqs)) if r == rank else 0.0 for r in range(world)}, device)
    sums = _all_reduce_sums(evaluate_split(best, seqs, "test", cfg.eval_batch_size, device), device)
    valid_best = metrics.finish(_all_reduce_sums(evaluate_split(best, seqs, "valid", cfg.eval_batch_size, device),
                                                 device))
    summary = None
    if is_main:
        test = metrics.finish(sums)
        history = [{**row, "sequences_per_s": row["examples_per_s"]} for row in run["history"]]
        summary = {
            "objective": cfg.model.objective, "loss": cfg.model.loss, "world_size": world,
            "best_epoch": run["best_epoch"], "epochs_run": run["epochs_run"], "epochs_this_attempt": epochs_this_attempt,
            "stopped_by": run["stopped_by"], "n_train_examples": len(data),
            "train_seconds": run["train_seconds"], "elapsed_seconds": run["elapsed_seconds"],
            "train_cpu_seconds": run["train_cpu_seconds"],
            "sequences_per_s": run["examples_seen"] / max(run["train_seconds"], 1e-9),
            "valid": valid_best, "test": test, "history": history, "config": asdict(cfg),
            "shoppers": n_shoppers, "shoppers_per_rank": [int(loaded[k]) for k in sorted(loaded)],
            **({"warm_start": warm} if warm is not None else {}),
        }
        save_model(best, out, extra={"train": {k: v for k, v in asdict(cfg).items() if k != "model"}})
        shutil.copy(Path(features) / "items.parquet", out / "items.parquet")
        write_all(features, "sequences", out / "histories.parquet")  # shard by shard
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        log.info("best epoch %d: valid ndcg@10 %.4f, test ndcg@10 %.4f hr@10 %.4f", run["best_epoch"],
                 valid_best["ndcg@10"], test["ndcg@10"], test["hr@10"])
    cleanup_distributed()
    return summary


def _warm_start(model: SeqRec, items, champion_dir: str, is_main: bool) -> dict:
    """Initialise ``model`` from ``champion_dir`` (every rank alike); the report, or why it started cold."""
    from shoprec.seqrec.warm_start import WarmStartRefused, warm_start

    try:
        report = warm_start(model, items, champion_dir)
    except WarmStartRefused as e:
        if is_main:
            log.warning("warm start refused, training from scratch: %s", e)
        return {"champion": champion_dir, "used": False, "reason": str(e)}
    if is_main:
        log.info("warm start from %s: %d items kept, %d new, %d dropped", champion_dir, report["items_kept"],
                 report["items_new"], report["items_dropped"])
    return {**report, "used": True}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    recipe = p.add_mutually_exclusive_group()
    recipe.add_argument("--recipe", help="YAML file of TrainConfig fields (see configs/seqrec/)")
    recipe.add_argument("--recipe-json", help="the recipe itself, as a JSON object (what launch passes)")
    p.add_argument("--overrides", default="{}", help="JSON object of TrainConfig fields that win over the recipe")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--checkpoint-uri", help="s3:// folder that mirrors the checkpoints (resume in a new pod)")
    a = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    cfg = load_recipe(json.loads(a.recipe_json) if a.recipe_json else a.recipe, **json.loads(a.overrides))
    train(a.features, a.out, cfg, resume=not a.no_resume, progress=sys.stderr.isatty(), checkpoint_uri=a.checkpoint_uri)


if __name__ == "__main__":
    main()
