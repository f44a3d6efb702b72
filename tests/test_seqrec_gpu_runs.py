"""benchmarks/seqrec_gpu_runs.py: the GPU plan parses and is fixed in advance, its commands are well formed, the
selection looks at validation only, and a run goes end to end (on a CPU, on the built-in shop) into the result
file through seqrec.py --merge-only. The Beauty part skips when the data is absent."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"


@pytest.fixture(scope="module")
def gpu(load_benchmark):
    return load_benchmark("seqrec_gpu_runs")


def test_plan_parses_and_fixes_the_confirm_seeds_in_advance(gpu):
    plan = gpu.load_plan()
    select = [r for r in plan["runs"] if r["stage"] == "select"]
    confirm = [r for r in plan["runs"] if r["stage"] == "confirm"]
    assert len(confirm) == 3 and sorted(r["seed"] for r in confirm) == [1, 2, 3]
    assert all(r["recipe"] == "selected" for r in confirm) and all(r["seed"] == 0 for r in select)
    assert {r["recipe"] for r in select} >= {"configs/seqrec/bsarec.yaml", "configs/seqrec/medium-bsarec.yaml"}
    assert "validation" in plan["selection_rule"] and "test figures play no part" in plan["selection_rule"]
    assert plan["common_overrides"]["max_elapsed_minutes"] > 0
    # every candidate is a distinct configuration
    configs = [json.dumps(gpu.comparable(gpu.training_config(plan, r)), sort_keys=True) for r in select]
    assert len(set(configs)) == len(configs)
    assert (REPO / ".gitignore").read_text().count("/.gpu-beauty/") == 1


def test_commands_are_torchrun_commands_of_the_recipe_with_the_seed(gpu):
    from shoprec.seqrec.train import load_recipe

    plan = gpu.load_plan()
    for r in plan["runs"]:
        selection = None
        if r["recipe"] == "selected":
            with pytest.raises(SystemExit, match="no selection"):
                gpu.run_command(plan, r)
            selection = {"recipe": "configs/seqrec/bsarec.yaml", "overrides": {"model": {"item_attributes": True}}}
        cmd = gpu.run_command(plan, r, selection, python="python3")
        assert shlex.split(shlex.join(cmd)) == cmd
        assert cmd[:3] == ["python3", "-m", "torch.distributed.run"] and "--max-restarts=0" in cmd
        assert cmd[cmd.index("-m", 3) + 1] == "shoprec.seqrec.train"
        args = dict(zip(cmd[cmd.index("--features")::2], cmd[cmd.index("--features") + 1::2]))
        assert args["--features"] == plan["features"] and args["--out"] == f"{plan['root']}/{r['name']}"
        assert (REPO / args["--recipe"]).exists()
        overrides = json.loads(args["--overrides"])
        assert overrides["seed"] == r["seed"] and overrides["amp"] is False
        cfg = load_recipe(REPO / args["--recipe"], **overrides)
        assert cfg.seed == r["seed"] and cfg.max_elapsed_minutes == plan["common_overrides"]["max_elapsed_minutes"]
        if r["recipe"] == "selected":
            assert cfg.model.item_attributes and cfg.model.filter_c == 5


def test_a_plan_that_breaks_the_rules_is_refused(gpu, tmp_path):
    plan = json.loads(gpu.PLAN.read_text())
    bad = [dict(plan, runs=plan["runs"][::-1]), dict(plan, runs=plan["runs"] + plan["runs"][:1]),
           dict(plan, runs=[{**plan["runs"][0], "recipe": "selected"}]),
           dict(plan, runs=[{**plan["runs"][0], "overrides": {"model": {"filter_c": 5, "objective": "bert4rec"}}}])]
    for i, p in enumerate(bad):
        (tmp_path / f"{i}.json").write_text(json.dumps(p))
        with pytest.raises(ValueError):
            gpu.load_plan(tmp_path / f"{i}.json")


def fake_run(gpu, plan, run, root: Path, valid: float, selection=None) -> None:
    folder = root / run["name"]
    folder.mkdir(parents=True)
    config = gpu.training_config(plan, run, selection)
    (folder / "metrics.json").write_text(json.dumps({
        "config": config, "valid": {"ndcg@10": valid}, "test": {"ndcg@10": 0.5, "hr@10": 0.5},
        "best_epoch": 3, "epochs_run": 9, "stopped_by": "patience"}))


def test_selection_reads_validation_only_and_breaks_ties_by_plan_order(gpu, tmp_path):
    plan = gpu.load_plan()
    select = [r for r in plan["runs"] if r["stage"] == "select"]
    for r, v in zip(select[:-1], [0.07, 0.08, 0.06]):
        fake_run(gpu, plan, r, tmp_path, v)
    with pytest.raises(SystemExit, match="not finished"):
        gpu.select(plan, tmp_path)
    fake_run(gpu, plan, select[-1], tmp_path, 0.08)  # ties with the second: the earlier one wins
    chosen = gpu.select(plan, tmp_path)
    assert chosen["chosen"] == select[1]["name"] and chosen["overrides"] == select[1].get("overrides", {})
    assert json.loads((tmp_path / "selection.json").read_text()) == chosen
    confirm = [r for r in plan["runs"] if r["stage"] == "confirm"]
    cmd = gpu.run_command(plan, confirm[0], gpu.read_selection(tmp_path))
    assert cmd[cmd.index("--recipe") + 1] == select[1]["recipe"]
    # the merge names every finished run and, once the three confirm seeds are there, their mean
    merge = gpu.merge_command(plan, tmp_path, "out.json")
    assert "--seed-mean" not in merge and merge.count("--also") == len(select)
    for r in confirm:
        fake_run(gpu, plan, r, tmp_path, 0.07, gpu.read_selection(tmp_path))
    merge = gpu.merge_command(plan, tmp_path, "out.json")
    assert merge[merge.index("--seed-mean") + 1] == "gpu-adopted=" + ",".join(f"gpu-{r['name']}" for r in confirm)
    assert select[1]["name"] in merge[-1] and "0.0800" in merge[-1]


def test_fetch_copies_what_the_device_sent_back(gpu, tmp_path):
    out = tmp_path / "out" / "bsarec-seed0"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "run.json").write_text("{}")
    (tmp_path / "out" / "stray").mkdir()
    assert gpu.fetch(tmp_path / "out", tmp_path / "root") == ["bsarec-seed0"]
    assert sorted(p.name for p in (tmp_path / "root" / "bsarec-seed0").iterdir()) == ["metrics.json", "run.json"]


def test_a_run_goes_end_to_end_into_the_result_file(gpu, tiny_features, tmp_path):
    """A two-run plan on the built-in shop, on a CPU: torchrun, run.json, the copy to $OUT, a second `run` that
    finds it finished, then seqrec.py --merge-only adds the rows to a result file."""
    plan = {"features": str(tiny_features), "root": str(tmp_path / "runs"), "nproc": 1,
            "common_overrides": {"epochs": 2, "threads": 1, "batch_size": 64, "max_elapsed_minutes": 1e-6},
            "selection_rule": "validation only",
            "runs": [{"name": "tiny-bsarec", "stage": "select", "recipe": "configs/seqrec/bsarec.yaml",
                      "overrides": {"model": {"d_model": 16}}, "seed": 0},
                     {"name": "tiny-adopted", "stage": "confirm", "recipe": "selected", "seed": 1}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    args = ["--plan", str(tmp_path / "plan.json"), "--allow-cpu", "--copy-to", str(tmp_path / "OUT")]
    # the budget stops it after one epoch; its checkpoints come back, and fetched elsewhere it can go on
    gpu.main(["run", "--stage", "select", "--copy-checkpoints", *args])
    first = json.loads((tmp_path / "runs" / "tiny-bsarec" / "metrics.json").read_text())
    assert first["epochs_run"] == 1 and first["stopped_by"] == "max_elapsed_minutes"
    assert sorted(p.name for p in (tmp_path / "OUT" / "tiny-bsarec").iterdir()) == sorted(
        ["metrics.json", "run.json", *gpu.CHECKPOINT_FILES])
    assert gpu.fetch(tmp_path / "OUT", tmp_path / "elsewhere") == ["tiny-bsarec"]
    assert (tmp_path / "elsewhere" / "tiny-bsarec" / "checkpoints" / "best" / "model.safetensors").exists()
    gpu.main(["run", "--stage", "select", "--continue-stopped", *args])
    done = json.loads((tmp_path / "runs" / "tiny-bsarec" / "metrics.json").read_text())
    assert done["epochs_run"] == 2 and done["stopped_by"] == "epochs" and done["history"][0] == first["history"][0]
    run = json.loads((tmp_path / "runs" / "tiny-bsarec" / "run.json").read_text())
    assert run["returncode"] == 0 and "shoprec.seqrec.train" in run["command"] and run["device"]
    assert len(run["earlier_attempts"]) == 1
    assert sorted(p.name for p in (tmp_path / "OUT" / "tiny-bsarec").iterdir()) == sorted(
        ["metrics.json", "run.json", *gpu.CHECKPOINT_FILES])
    gpu.main(["select", "--plan", str(tmp_path / "plan.json")])
    gpu.main(["run", *args])  # the select run is found finished; the confirm run trains
    assert json.loads((tmp_path / "runs" / "tiny-adopted" / "metrics.json").read_text())["config"]["seed"] == 1
    assert json.loads((tmp_path / "runs" / "tiny-adopted" / "run.json").read_text())["selection"]["chosen"] == "tiny-bsarec"

    result = tmp_path / "result.json"
    result.write_text(json.dumps({"models": {"shoprec-best": {"ndcg@10": 0.0559}}, "notes": ["old"]}))
    cmd = gpu.merge_command(gpu.load_plan(tmp_path / "plan.json"), tmp_path / "runs", str(result))
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    merged = json.loads(result.read_text())
    assert set(merged["models"]) == {"shoprec-best", "gpu-tiny-bsarec", "gpu-tiny-adopted"}
    row = merged["models"]["gpu-tiny-adopted"]
    assert row["trained_by"]["seed"] == 1 and "--merge-only" in row["command"]
    assert row["stopped_by"] == "max_elapsed_minutes" and merged["models"]["gpu-tiny-bsarec"]["stopped_by"] == "epochs"
    assert merged["notes"][0] == "old" and "tiny-bsarec" in merged["notes"][-1]
    assert merged["published"]["BSARec"]["ndcg@10"] == 0.0611
    # one confirm seed here, so no seed mean; seqrec.py's mean itself:
    bench = sys.modules.get("bench_seqrec")
    if bench is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_seqrec", REPO / "benchmarks" / "seqrec.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    rows = {f"s{i}": {"ndcg@10": v, "hr@10": 2 * v, "valid_ndcg@10": v + 0.01, "config": {"seed": i}}
            for i, v in enumerate([0.06, 0.07, 0.08])}
    mean = bench.seed_mean(rows, ["s0", "s1", "s2"])
    assert mean["ndcg@10"] == pytest.approx(0.07) and mean["hr@10"] == pytest.approx(0.14)
    assert mean["each"]["s2"]["seed"] == 2


def test_beauty_features_are_prepared_for_the_device(gpu, tmp_path):
    if not BEAUTY.exists():
        pytest.skip(f"{BEAUTY} not here")
    feats = gpu.prepare(BEAUTY, tmp_path)
    from shoprec.data.features import load_items, load_sequences

    users, _ = load_sequences(feats)
    items = load_items(feats)
    assert len(users) == 22363 and len(items) == 12101 and "attributes" in items
    assert sum(f.stat().st_size for f in feats.rglob("*") if f.is_file()) < 16 * 2**20  # carried to the device
