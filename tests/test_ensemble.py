"""Ensembles: members trained from one recipe under torchrun, scored and served as one model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from shoprec import metrics
from shoprec.data.features import load_sequences
from shoprec.registry.versions import stage_model_files
from shoprec.seqrec.launch import launch, train_ensemble
from shoprec.seqrec.model import SeqRec, SeqRecConfig, SeqRecEnsemble, left_pad, load_model
from shoprec.seqrec.recommend import Recommender
from shoprec.seqrec.train import evaluate_split, load_recipe, merge_overrides, recipe_members
from tests.conftest import free_port, start_service

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
TINY = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "patience": 50,
        "model": {"objective": "sasrec", "loss": "sampled_softmax", "n_negatives": 32, "max_len": 20,
                  "d_model": 32, "n_heads": 2, "n_layers": 1}}


def test_ensemble_scores_are_the_mean_of_the_members_log_softmax():
    torch.manual_seed(0)
    a = SeqRec(SeqRecConfig(n_items=30, max_len=10, d_model=16, n_layers=1)).eval()
    b = SeqRec(SeqRecConfig(n_items=30, max_len=10, d_model=16, n_layers=1, score_temperature=0.1)).eval()
    hist = left_pad([[1, 2, 3], [4, 5]], 10)
    want = (torch.log_softmax(a.next_item_scores(hist), -1) + torch.log_softmax(b.next_item_scores(hist), -1)) / 2
    assert torch.allclose(SeqRecEnsemble([a, b]).next_item_scores(hist), want)
    with pytest.raises(ValueError, match="share n_items and max_len"):
        SeqRecEnsemble([a, SeqRec(SeqRecConfig(n_items=31, max_len=10, d_model=16, n_layers=1))])


def test_ensemble_recipe_trains_each_member_and_is_served_as_one_model(tiny_features, tmp_path):
    recipe = tmp_path / "ens.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "members": [{}, {"seed": 1, "model": {"dropout": 0.1}}]}))
    out = tmp_path / "ens"
    summary = train_ensemble(tiny_features, out, recipe, nproc=1, max_restarts=0, parallel=2)

    members = [json.loads((out / f"member-{i}" / "metrics.json").read_text()) for i in (0, 1)]
    assert [m["config"]["seed"] for m in members] == [0, 1]
    share = max(1, (os.cpu_count() or 1) // 2)
    assert [m["config"]["threads"] for m in members] == [share, share]  # parallel=2: the cores shared out
    assert [m["config"]["model"]["dropout"] for m in members] == [0.2, 0.1]
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["member-0", "member-1"]
    model = load_model(out)
    assert isinstance(model, SeqRecEnsemble) and len(model.members) == 2
    # the figures are the ensemble's own, not a member's
    _, seqs = load_sequences(tiny_features)
    test = metrics.finish(evaluate_split(model, seqs, "test", 512, "cpu"))
    assert abs(test["ndcg@10"] - summary["test"]["ndcg@10"]) < 1e-9
    assert json.loads((out / "metrics.json").read_text())["test"] == summary["test"]
    assert summary["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in members))
    assert {m["test"]["ndcg@10"] for m in members} != {summary["test"]["ndcg@10"]}

    # served like a single model, over HTTP, from the files a registered version holds
    staged = stage_model_files(out, tmp_path / "staged")
    assert not list(staged.rglob("checkpoints"))
    rec = Recommender(staged)
    user = next(iter(rec.histories))
    want = rec.recommend([rec.history_of(user)], k=5)[0]
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(staged), "--port", str(port)],
                        f"http://127.0.0.1:{port}", "/healthz", tmp_path / "serve.log")
    try:
        r = httpx.post(f"{svc.url}/v1/recommend", json={"user_id": user, "k": 5})
    finally:
        svc.stop()
    assert r.status_code == 200, r.text
    assert [i["item_id"] for i in r.json()["items"]] == [i["item_id"] for i in want]

    # a restarted job keeps finished members (whatever its threads); a member whose fields changed is trained again
    stamps = [(out / f"member-{i}" / "model.safetensors").stat().st_mtime_ns for i in (0, 1)]
    recipe.write_text(yaml.safe_dump({**TINY, "members": [{}, {"seed": 1, "model": {"dropout": 0.3}}]}))
    again = launch(tiny_features, out, nproc=1, recipe=recipe, max_restarts=0)  # launch takes ensemble recipes
    assert (out / "member-0" / "model.safetensors").stat().st_mtime_ns == stamps[0]
    assert (out / "member-1" / "model.safetensors").stat().st_mtime_ns != stamps[1]
    assert again["members"][1]["valid"] != summary["members"][1]["valid"]


def test_medium_ensemble_is_medium_plus_members():
    folder = REPO / "configs" / "seqrec"
    ens = yaml.safe_load((folder / "medium-ensemble.yaml").read_text())
    members = ens.pop("members")
    assert ens == yaml.safe_load((folder / "medium.yaml").read_text())
    assert recipe_members(folder / "medium-ensemble.yaml") == members and len(members) == 3
    assert recipe_members(folder / "medium.yaml") is None
    with pytest.raises(ValueError, match="ensemble recipe"):
        load_recipe(folder / "medium-ensemble.yaml")


def test_bad_members_and_override_layers(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"epochs": 1, "members": ["seed 1"]}))
    with pytest.raises(ValueError, match="members must be a non-empty list"):
        recipe_members(bad)
    merged = merge_overrides({"seed": 1, "model": {"id_dropout": 0.2}}, {"epochs": 3, "model": {"dropout": None}})
    assert merged == {"seed": 1, "epochs": 3, "model": {"id_dropout": 0.2}}
