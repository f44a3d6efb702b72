"""A generic PyTorch DDP fit loop: the trainer every shoprec model is meant to share.

``fit(model, train_dataset, collate, loss_fn, evaluate_fn, out_dir, config)`` runs the same way in
one process or under ``torchrun`` (gloo on CPU, NCCL with one process per GPU):

- the process group is initialised from the torchrun environment (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``);
- each process reads its shard of ``train_dataset`` (DistributedSampler); DDP averages gradients. With
  ``local_share``, ``train_dataset`` holds only this process's share of the rows (e.g.
  :func:`shoprec.data.shards.read_share`): :class:`ShareSampler` shuffles that share and pads it to the longest
  rank's share, so every rank runs the same steps and no process loads all examples;
- AdamW with weight decay (not on biases and LayerNorm weights), linear warmup then linear decay to 0
  (or a constant learning rate);
- optional batching of each epoch's shard by the caller (``epoch_batches``: e.g. similar lengths together),
  with the caller's random streams reseeded per epoch so a resumed run replays the same batches;
- gradient accumulation (DDP gradient sync only on the last micro-batch of an optimizer step);
- optional FGM adversarial training (Miyato et al. 2017): after the normal backward pass the output
  of the word-embedding layer is pushed by ``epsilon * g / ||g||`` along its gradient ``g`` and the
  loss on the perturbed input is back-propagated too. Perturbing the embedding *output* rather than
  the weight matrix works the same whether the embedding is trainable (full fine-tuning) or frozen (LoRA);
- bf16 autocast on CUDA;
- after every epoch ``evaluate_fn(model)`` gives validation metrics; rank 0's are broadcast, so every
  process makes the same early-stopping decision; the best model is kept (``save_best``) and a
  checkpoint (model, optimizer, scheduler, loop state) is written atomically, so a restarted run
  (``torchrun --max-restarts``) resumes after the last finished epoch;
- only rank 0 logs, shows a tqdm bar and writes files.

Contracts:

- ``loss_fn(module, batch) -> Tensor`` (a scalar) or a dict with a ``"loss"`` entry (other entries are
  averaged and logged). ``module`` is the DDP-wrapped model in a multi-process run: call its
  ``forward`` through it (``module(...)``) so gradients are synchronised.
- ``evaluate_fn(model) -> dict[str, float]`` is called on every rank with the unwrapped model in eval
  mode; it may shard its work and reduce with :func:`all_reduce_sums`, or compute everything itself.
- ``collate(list_of_examples) -> batch``; tensors in the batch are moved to the device by :func:`to_device`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from shoprec.fit_config import FitConfig

log = logging.getLogger("shoprec.trainer.loop")


# ------------------------------------------------------------------ distributed helpers
def dist_env() -> tuple[int, int, int]:
    """(world size, rank, local rank) from the torchrun environment; (1, 0, 0) outside it."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed() -> tuple[int, int, torch.device]:
    """Initialise the process group when run under torchrun; returns (world, rank, device)."""
    world, rank, local_rank = dist_env()
    use_cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    elif world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if world > 1:
        init_process_group(world, rank, use_cuda)
    return world, rank, device


def init_process_group(world: int, rank: int, use_cuda: bool) -> None:
    """Join the torchrun group (NCCL on GPUs, gloo on CPU) once, with a bounded wait.

    After torchrun restarts a failed attempt, keys the previous attempt left in the agent's store (dead
    workers' gloo addresses) would be read by the new workers, which then fail to connect or hang; a
    key prefix per restart attempt gives each attempt a clean slate. A group that cannot form within
    ``SHOPREC_DIST_TIMEOUT`` seconds fails the attempt, and torchrun restarts it.
    """
    from datetime import timedelta

    if dist.is_initialized():
        return
    timeout = timedelta(seconds=float(os.environ.get("SHOPREC_DIST_TIMEOUT", "300")))
    backend = "nccl" if use_cuda else "gloo"
    if "TORCHELASTIC_RESTART_COUNT" in os.environ and "MASTER_ADDR" in os.environ:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                              timeout=timeout)
        attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
        dist.init_process_group(backend, store=dist.PrefixStore(f"shoprec/attempt-{attempt}", store), rank=rank,
                                world_size=world, timeout=timeout)
    else:
        dist.init_process_group(backend, timeout=timeout)


def all_reduce_sums(sums: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Sum a dict of floats over all processes (identity in a single process)."""
    if not dist.is_initialized():
        return sums
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


class ShareSampler(Sampler):
    """This rank's own rows (the dataset holds only them), shuffled per epoch and padded by wrapping to
    ``per_rank``, the longest rank's share, so every rank runs the same number of steps (as DistributedSampler
    pads) and none drops a row: shares differ by more than one row when each shopper gives several examples
    (prefixes). With one process it draws exactly DistributedSampler's order."""

    def __init__(self, local_len: int, per_rank: int, seed: int = 0):
        if local_len > per_rank:
            raise ValueError(f"this rank's share has {local_len} rows, more than the {per_rank} every rank runs")
        self.local_len, self.per_rank, self.seed, self.epoch = local_len, per_rank, seed, 0
        if local_len == 0 and self.per_rank > 0:
            raise ValueError(f"this rank has no rows while another has {per_rank}: fewer rows than ranks")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.local_len, generator=g).tolist()
        while len(order) < self.per_rank:
            order += order[:self.per_rank - len(order)]
        return iter(order[:self.per_rank])

    def __len__(self) -> int:
        return self.per_rank


def longest_share(local_len: int, device: torch.device | str = "cpu") -> int:
    """The largest ``local_len`` over all processes (itself in a single process)."""
    if not dist.is_initialized():
        return local_len
    t = torch.tensor([local_len], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def batch_size_of(batch: Any) -> int:
    """Examples in a collated batch: the first dimension of its first tensor (0 if it has none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for x in items:
        n = batch_size_of(x)
        if n:
            return n
    return 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_state_safetensors(model: nn.Module, folder: Path) -> None:
    """Default ``save_best``: the full state dict as ``model.safetensors`` (atomic rename)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "model.safetensors")


def load_state_safetensors(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, decay: bool = True):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if not decay:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


class FGM:
    """Fast Gradient Method on an embedding module's output (see the module docstring)."""

    def __init__(self, model: nn.Module, module_name: str, epsilon: float):
        matches = [m for n, m in model.named_modules() if n.endswith(module_name) and isinstance(m, nn.Embedding)]
        if not matches:
            raise ValueError(f"FGM: no nn.Embedding named *{module_name} in the model")
        self.module, self.epsilon = matches[0], epsilon
        self.output: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None
        self.handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.delta is not None:
            return output + self.delta
        if not output.requires_grad:  # frozen embedding (LoRA): make the output a leaf we can differentiate
            output = output.detach().requires_grad_(True)
        else:
            output.retain_grad()
        self.output = output
        return output

    def perturb(self) -> bool:
        """Set the perturbation from the last backward pass; False when there was no gradient."""
        if self.output is None or self.output.grad is None:
            return False
        g = self.output.grad.detach()
        norm = g.norm()
        if not torch.isfinite(norm) or norm == 0:
            return False
        self.delta = self.epsilon * g / norm
        return True

    def restore(self) -> None:
        self.delta, self.output = None, None

    def remove(self) -> None:
        self.handle.remove()


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (identity outside DDP), so every rank acts on the same decision."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


# ------------------------------------------------------------------ the loop
def fit(model: nn.Module, train_dataset: Dataset, collate: Callable, loss_fn: Callable,
        evaluate_fn: Callable[[nn.Module], dict] | None, out_dir: str | Path, config: FitConfig | dict | None = None,
        *, resume: bool = True, save_best: Callable[[nn.Module, Path], None] | None = None,
        load_best: Callable[[nn.Module, Path], None] | None = None, restore_best: bool = True,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        epoch_batches: Callable[[list[int], int], list[list[int]]] | None = None,
        local_share: bool = False) -> dict:
    """Train ``model`` in place; returns the run summary (the same on every rank).

    Writes ``out_dir/checkpoints/last.pt`` (resume state) and ``out_dir/checkpoints/best/`` (via
    ``save_best``, default: ``model.safetensors`` of the state dict). With ``restore_best`` the best
    epoch's weights are loaded back into ``model`` at the end (via ``load_best``).
    ``epoch_batches(indices, epoch)``: this process's shuffled dataset indices for ``epoch`` cut into
    micro-batches by the caller (default: consecutive ``batch_size`` slices); called at the start of
    every epoch, before any other random draw of that epoch.
    ``local_share``: ``train_dataset`` is only this process's share of the rows (:class:`ShareSampler`);
    False: every process holds all of it (DistributedSampler).
    """
    cfg = config if isinstance(config, FitConfig) else FitConfig.from_dict(config)
    save_best = save_best or save_state_safetensors
    load_best = load_best or load_state_safetensors
    world, rank, device = setup_distributed()
    if device.type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    is_main = rank == 0
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model.to(device)
    module = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if not local_share:
        sampler = DistributedSampler(train_dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                     drop_last=False)
    else:
        sampler = ShareSampler(len(train_dataset), longest_share(len(train_dataset), device), seed=cfg.seed)

    def make_loader(epoch: int) -> DataLoader:
        if epoch_batches is None:
            return DataLoader(train_dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate)
        # its own generator: iterating a DataLoader draws a seed, which must not come from the global stream
        # that the caller reseeded for dropout
        return DataLoader(train_dataset, batch_sampler=epoch_batches(list(sampler), epoch), collate_fn=collate,
                          generator=torch.Generator().manual_seed(cfg.seed + epoch))

    def micro_batches(loader: DataLoader) -> int:
        return len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)

    steps_per_epoch = math.ceil(micro_batches(make_loader(0)) / cfg.grad_accum)
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    sched = linear_warmup_decay(opt, total_steps, int(cfg.warmup_ratio * total_steps), cfg.lr_schedule == "linear")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.amp)
    fgm = FGM(model, cfg.fgm_module, cfg.fgm_epsilon) if cfg.fgm_epsilon > 0 else None
    trainable, total = count_parameters(model)
    sign = 1.0 if cfg.mode == "max" else -1.0

    state: dict[str, Any] = {"epoch": -1, "best": None, "best_epoch": -1, "stale": 0, "history": [],
                             "train_seconds": 0.0, "train_cpu_seconds": 0.0, "elapsed_seconds": 0.0,
                             "examples_seen": 0, "steps": 0, "step_seconds": []}
    last = ckpt_dir / "last.pt"
    if resume and last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["optim"])
        sched.load_state_dict(ckpt["sched"])
        state = ckpt["state"]
        if is_main:
            log.info("resumed from %s after epoch %d (best %s %s)", last, state["epoch"], cfg.metric, state["best"])
    if is_main:
        log.info("fit: %d examples, world size %d, device %s, %d/%d parameters trainable (%.2f%%), "
                 "%d optimizer steps", len(train_dataset), world, device, trainable, total,
                 100.0 * trainable / max(total, 1), total_steps)

    def run_loss(batch):
        with autocast:
            out = loss_fn(module, batch)
        if isinstance(out, dict):
            return out["loss"], {k: float(v) for k, v in out.items() if k != "loss"}
        return out, {}

    stopped_by = "epochs"
    attempt_start = state.get("elapsed_seconds", 0.0)  # max_elapsed_minutes counts this attempt only
    attempt_epochs0 = len(state["history"])  # and always lets it train one epoch
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        if state["stale"] >= cfg.patience:
            stopped_by = "patience"
            break
        if cfg.max_train_minutes and state["train_seconds"] > 60 * cfg.max_train_minutes:
            if is_main:
                log.info("stopping: training time budget of %.1f min used", cfg.max_train_minutes)
            stopped_by = "max_train_minutes"
            break
        if cfg.max_elapsed_minutes and len(state["history"]) > attempt_epochs0:
            totals = [0.0] + [h.get("elapsed_seconds_total", 0.0) for h in state["history"][-2:]]
            pace = totals[-1] - totals[-2]
            if state["elapsed_seconds"] - attempt_start + pace > 60 * cfg.max_elapsed_minutes:
                if is_main:
                    log.info("stopping: another epoch (%.0f s at the last one's pace) would pass the wall-clock "
                             "budget of %.1f min", pace, cfg.max_elapsed_minutes)
                stopped_by = "max_elapsed_minutes"
                break
        sampler.set_epoch(epoch)
        loader = make_loader(epoch)
        micro_per_epoch = micro_batches(loader)
        module.train()
        t0, c0, loss_sum, n_micro, seen, extras = time.perf_counter(), time.process_time(), 0.0, 0, 0, {}
        bar = tqdm(loader, total=micro_per_epoch, desc=f"epoch {epoch}", unit="batch",
                   disable=not (is_main and cfg.progress), leave=False)
        opt.zero_grad(set_to_none=True)
        t_step = time.perf_counter()
        for i, batch in enumerate(bar):
            if i >= micro_per_epoch:
                break
            batch = to_device(batch, device)
            last_micro = (i + 1) % cfg.grad_accum == 0 or i + 1 == micro_per_epoch
            sync = module.no_sync() if (world > 1 and not last_micro) else contextlib.nullcontext()
            with sync:
                loss, more = run_loss(batch)
                (loss / cfg.grad_accum).backward()
                if fgm is not None:
                    if fgm.perturb():
                        adv, _ = run_loss(batch)
                        (adv / cfg.grad_accum).backward()
                    fgm.restore()
            loss_sum += float(loss.detach())
            n_micro += 1
            seen += batch_size_of(batch)
            for k, v in more.items():
                extras[k] = extras.get(k, 0.0) + v
            if last_micro:
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                   cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                now = time.perf_counter()
                state["step_seconds"].append(now - t_step)
                state["step_seconds"] = state["step_seconds"][-1000:]
                t_step = now
                state["steps"] += 1
            bar.set_postfix(loss=f"{loss_sum / n_micro:.4f}")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        t_eval = time.perf_counter()
        state["train_seconds"] += seconds
        state["train_cpu_seconds"] = state.get("train_cpu_seconds", 0.0) + cpu
        state["examples_seen"] = state.get("examples_seen", 0) + seen * world
        model.eval()
        with torch.no_grad():
            valid = dict(evaluate_fn(model)) if evaluate_fn is not None else {}
        valid = broadcast_from_rank0(valid)
        state["elapsed_seconds"] = state.get("elapsed_seconds", 0.0) + seconds + time.perf_counter() - t_eval
        row = {"epoch": epoch, "loss": loss_sum / max(n_micro, 1), "epoch_seconds": seconds, "epoch_cpu_seconds": cpu,
               "examples_per_s": seen * world / max(seconds, 1e-9), "train_seconds_total": state["train_seconds"],
               "train_cpu_seconds_total": state["train_cpu_seconds"], "elapsed_seconds_total": state["elapsed_seconds"],
               **{k: v / max(n_micro, 1) for k, v in extras.items()}, **{f"valid_{k}": v for k, v in valid.items()}}
        state["history"].append(row)
        value = valid.get(cfg.metric, -row["loss"] if cfg.mode == "max" else row["loss"])
        improved = state["best"] is None or sign * value > sign * state["best"]
        if improved:
            state.update(best=float(value), best_epoch=epoch, stale=0)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        if is_main:
            log.info("epoch %d loss %.4f %s (%.1f s)%s", epoch, row["loss"],
                     " ".join(f"{k} {v:.4f}" for k, v in valid.items() if isinstance(v, float)), seconds,
                     " *" if improved else "")
            if improved:
                save_best(model, ckpt_dir / "best")
            _save_atomic({"model": {k: v for k, v in model.state_dict().items()}, "optim": opt.state_dict(),
                          "sched": sched.state_dict(), "state": state}, last)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if world > 1:
            dist.barrier()

    if fgm is not None:
        fgm.remove()
    if restore_best and (ckpt_dir / "best").exists():
        load_best(model, ckpt_dir / "best")
    model.eval()
    steps = state["step_seconds"]
    return {
        "best_epoch": state["best_epoch"], "best_" + cfg.metric: state["best"], "epochs_run": state["epoch"] + 1,
        "stopped_by": "patience" if state["stale"] >= cfg.patience else stopped_by,
        "history": state["history"], "train_seconds": state["train_seconds"], "optimizer_steps": state["steps"],
        "train_cpu_seconds": state.get("train_cpu_seconds", 0.0), "elapsed_seconds": state.get("elapsed_seconds", 0.0),
        "examples_seen": state.get("examples_seen", 0),
        # the first steps include warm-up effects (allocations, thread pools): the median is the honest figure
        "step_seconds": statistics.median(steps) if steps else None,
        "trainable_params": trainable, "total_params": total, "world_size": world, "config": cfg.to_dict(),
    }


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
