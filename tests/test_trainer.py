"""The generic DDP fit loop: schedule, accumulation, checkpoint/resume, early stopping, FGM, 2-process gloo DDP."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from torch import nn

from shoprec.trainer import loop as trainer
from shoprec.trainer.loop import FitConfig, fit


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(self.word_embeddings(x).mean(1)).squeeze(-1)


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 10, (n, 3), generator=g)
    y = (x.float().mean(1) > 4.5).float()
    return list(zip(x, y))


def collate(rows):
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def loss_fn(module, batch):
    x, y = batch
    return nn.functional.binary_cross_entropy_with_logits(module(x), y)


def make_eval(data):
    def evaluate(model):
        x, y = collate(data)
        return {"loss": float(loss_fn(model, (x, y)))}
    return evaluate


def test_schedule_warmup_then_linear_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = trainer.linear_warmup_decay(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.125)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_weight_decay_skips_biases():
    opt = trainer.make_optimizer(Toy(), 1e-3, 0.1)
    decays = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert decays == {0.1: 44, 0.0: 1}


def test_fit_learns_checkpoints_and_resumes(tmp_path):
    data = toy_data()
    cfg = dict(epochs=2, batch_size=8, lr=0.05, warmup_ratio=0.0, patience=10, progress=False)
    torch.manual_seed(0)
    m = Toy()
    s1 = fit(m, data, collate, loss_fn, make_eval(data), tmp_path, cfg)
    assert s1["epochs_run"] == 2 and len(s1["history"]) == 2
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").exists()
    assert s1["trainable_params"] == s1["total_params"] == 45 and s1["step_seconds"] > 0
    # a longer run in the same folder resumes after epoch 1 instead of starting over
    s2 = fit(Toy(), data, collate, loss_fn, make_eval(data), tmp_path, {**cfg, "epochs": 4})
    assert s2["epochs_run"] == 4 and [h["epoch"] for h in s2["history"]] == [0, 1, 2, 3]
    assert s2["history"][-1]["loss"] < s1["history"][0]["loss"]


def test_early_stopping_and_best_restore(tmp_path):
    data = toy_data()
    calls = iter([0.5, 0.4, 0.45, 0.6, 0.7, 0.8])  # best at epoch 1, then two epochs without improvement

    def evaluate(model):
        return {"loss": next(calls), "w": float(model.lin.weight.sum())}

    m = Toy()
    s = fit(m, data, collate, loss_fn, evaluate, tmp_path, dict(epochs=6, batch_size=16, patience=2, progress=False))
    assert s["epochs_run"] == 4 and s["best_epoch"] == 1 and s["best_loss"] == pytest.approx(0.4)
    assert float(m.lin.weight.sum()) == pytest.approx(s["history"][1]["valid_w"], abs=1e-6)


def test_caller_batches_and_constant_rate(tmp_path):
    """``epoch_batches`` decides every micro-batch (called once per epoch with that epoch's shuffled indices);
    ``lr_schedule="constant"`` keeps the rate."""
    data = toy_data(40)
    calls = []

    def epoch_batches(indices, epoch):
        calls.append((epoch, sorted(indices)))
        by_label = sorted(indices, key=lambda i: float(data[i][1]))  # e.g. similar examples together
        return [by_label[b:b + 7] for b in range(0, len(by_label), 7)]

    seen_w = []

    def evaluate(model):
        seen_w.append(float(model.lin.weight.sum()))
        return {"loss": 0.0}

    m = Toy()
    cfg = dict(epochs=2, batch_size=99, lr=0.05, warmup_ratio=0.0, lr_schedule="constant", patience=5,
               progress=False)
    s = fit(m, data, collate, loss_fn, evaluate, tmp_path, cfg, epoch_batches=epoch_batches, restore_best=False)
    assert [e for e, _ in calls if e == 1] == [1] and all(ix == list(range(40)) for _, ix in calls)
    assert s["optimizer_steps"] == 2 * 6 and s["examples_seen"] == 2 * 40  # ceil(40 / 7) batches per epoch
    assert s["history"][0]["examples_per_s"] > 0 and s["train_cpu_seconds"] > 0
    assert seen_w[-1] == pytest.approx(float(m.lin.weight.sum()), abs=1e-6)  # validated the trained weights
    with pytest.raises(ValueError, match="lr_schedule"):
        FitConfig(lr_schedule="cosine")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = trainer.linear_warmup_decay(opt, total_steps=10, warmup_steps=0, decay=False)
    for _ in range(9):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0


def test_gradient_accumulation_matches_bigger_batch(tmp_path):
    data = toy_data(32)
    results = []
    for bs, acc in ((16, 1), (8, 2)):
        torch.manual_seed(1)
        m = Toy()
        fit(m, data, collate, loss_fn, None, tmp_path / f"{bs}", dict(epochs=1, batch_size=bs, grad_accum=acc,
                                                                       lr=0.1, progress=False), restore_best=False)
        results.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_fgm_runs_on_frozen_and_trainable_embeddings(tmp_path):
    data = toy_data()
    for frozen in (False, True):
        torch.manual_seed(0)
        m = Toy()
        m.word_embeddings.weight.requires_grad_(not frozen)
        before = m.word_embeddings.weight.detach().clone()
        s = fit(m, data, collate, loss_fn, make_eval(data), tmp_path / str(frozen),
                dict(epochs=2, batch_size=8, lr=0.05, fgm_epsilon=0.5, progress=False))
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in s["history"])
        assert torch.equal(before, m.word_embeddings.weight) == frozen
    # the forward hook is removed afterwards
    assert not m.word_embeddings._forward_hooks


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        FitConfig.from_dict({"epochs": 1, "nope": 2})
    with pytest.raises(ValueError):
        FitConfig(mode="best")


def _ddp_worker(rank, world, port, out):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = Toy()
    data = toy_data()
    s = fit(m, data, collate, loss_fn, make_eval(data[rank::world]), out,
            dict(epochs=2, batch_size=8, lr=0.05, progress=False))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"params": [float(x) for p in m.parameters() for x in p.detach().flatten()],
                   "history": s["history"], "world": s["world_size"]}, f)
    trainer.cleanup_distributed()


def test_two_process_gloo_ddp(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2
    assert r0["params"] == pytest.approx(r1["params"], abs=1e-6)  # DDP kept the replicas identical
    # every rank saw rank 0's validation metrics, so early stopping agrees
    assert [h["valid_loss"] for h in r0["history"]] == [h["valid_loss"] for h in r1["history"]]
    assert (tmp_path / "checkpoints" / "last.pt").exists()
