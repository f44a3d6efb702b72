"""Two gloo processes under torchrun, as in the cluster but on this CPU."""

import json

import pytest

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
    # each rank loaded only its half of the shoppers (contiguous rows of the features' shards)
    n = saved["shoppers"]
    assert saved["shoppers_per_rank"] == [n // 2, n - n // 2] and saved["test"]["count"] == n


def test_the_share_sampler_pads_every_rank_to_the_same_steps_and_matches_one_process():
    from torch.utils.data.distributed import DistributedSampler

    from shoprec.trainer.loop import ShareSampler

    one = ShareSampler(10, 10, seed=3)
    one.set_epoch(2)
    reference = DistributedSampler(list(range(10)), num_replicas=1, rank=0, shuffle=True, seed=3)
    reference.set_epoch(2)
    assert list(one) == list(reference)
    shares = [ShareSampler(n, 6, seed=0) for n in (5, 6)]  # 11 rows over 2 ranks: 5 and 6
    assert [len(list(s)) for s in shares] == [6, 6]
    assert sorted(set(shares[0])) == list(range(5)) and sorted(shares[1]) == list(range(6))
    # prefixes: one rank's share can be far longer than the mean; every row of it is still drawn each epoch
    uneven = [ShareSampler(n, 9, seed=1) for n in (2, 9)]
    assert [len(list(s)) for s in uneven] == [9, 9] and sorted(uneven[1]) == list(range(9))
    with pytest.raises(ValueError, match="more than"):
        ShareSampler(10, 9)
