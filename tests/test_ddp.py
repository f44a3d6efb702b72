"""Two gloo processes under torchrun, as in the cluster but on this CPU."""

import json

from shoprec.seqrec.launch import launch


def test_two_process_gloo_training(tiny_features, tmp_path):
    overrides = {"epochs": 3, "batch_size": 32, "lr": 3e-3,
                 "model": {"objective": "sasrec", "max_len": 20, "d_model": 32, "n_layers": 1}}
    summary = launch(tiny_features, tmp_path / "m", nproc=2, overrides=overrides)
    assert summary["world_size"] == 2
    assert len(summary["history"]) == 3
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"model.safetensors", "config.json", "items.parquet", "histories.parquet", "metrics.json"} <= files
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["test"]["count"] == saved["valid"]["count"] > 100
    assert saved["test"]["ndcg@10"] > 0
