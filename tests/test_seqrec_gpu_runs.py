"""benchmarks/seqrec_gpu_runs.py: the GPU plan parses and is fixed in advance, its commands are well formed, the
selection looks at mean validation only, runs go side by side (each its own rendezvous port; a failure stops no
other), what comes back from $OUT fits its limits, and runs go end to end (on a CPU, on the built-in shop) into the
result file through seqrec.py --merge-only. The Beauty part skips when the data is absent."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"


@pytest.fixture(scope="module")
def gpu(load_benchmark):
    return load_benchmark("seqrec_gpu_runs")


def test_plan_parses_and_fixes_the_seeds_and_the_rule_in_advance(gpu):
    plan = gpu.load_plan()
    assert plan["seeds"] == [1, 2, 3] and len(plan["candidates"]) == 4
    assert len(plan["runs"]) == 12 == plan["parallel"]
    assert {(r["candidate"], r["seed"]) for r in plan["runs"]} == {
        (c["name"], s) for c in plan["candidates"] for s in (1, 2, 3)}
    assert all(r["name"] == f"{r['candidate']}-seed{r['seed']}" for r in plan["runs"])
    assert {c["recipe"] for c in plan["candidates"]} >= {"configs/seqrec/bsarec.yaml", "configs/seqrec/medium-bsarec.yaml"}
    rule = plan["selection_rule"]
    assert "mean" in rule and "validation" in rule and "test figures play no part" in rule
    assert plan["revised"].startswith("2026-12-05, before any run")
    # 12 runs side by side, their start-up and the test pass fit a 10-minute device command
    assert 0 < plan["common_overrides"]["max_elapsed_minutes"] <= 7
    assert (REPO / ".gitignore").read_text().count("/.gpu-beauty/") == 1
    assert f"run --parallel {plan['parallel']} " in gpu.__doc__ and "timeout_s=600" in gpu.__doc__


def test_the_cpu_plan_is_the_reproduction_at_the_same_seeds_with_grouped_batches(gpu):
    cpu = gpu.load_plan(REPO / "benchmarks" / "seqrec_cpu_plan.json")
    assert cpu["seeds"] == gpu.load_plan()["seeds"] and [c["recipe"] for c in cpu["candidates"]] == [
        "configs/seqrec/bsarec.yaml"] and cpu["row_prefix"] == "cpu"
    config = gpu.training_config(cpu, cpu["runs"][0])
    assert config["group_by_length"] is True and config["model"]["filter_c"] == 5 and config["amp"] is False


def test_commands_are_torchrun_commands_of_the_recipe_with_the_seed(gpu):
    from shoprec.seqrec.train import load_recipe

    plan = gpu.load_plan()
    for r in plan["runs"]:
        cmd = gpu.run_command(plan, r, python="python3")
        assert shlex.split(shlex.join(cmd)) == cmd and "--standalone" in cmd
        assert cmd[:3] == ["python3", "-m", "torch.distributed.run"] and "--max-restarts=0" in cmd
        assert cmd[cmd.index("-m", 3) + 1] == "shoprec.seqrec.train"
        args = dict(zip(cmd[cmd.index("--features")::2], cmd[cmd.index("--features") + 1::2]))
        assert args["--features"] == plan["features"] and args["--out"] == f"{plan['root']}/{r['name']}"
        assert (REPO / args["--recipe"]).exists()
        overrides = json.loads(args["--overrides"])
        assert overrides["seed"] == r["seed"] and overrides["amp"] is False and "threads" not in overrides
        cfg = load_recipe(REPO / args["--recipe"], **overrides)
        assert cfg.seed == r["seed"] and cfg.max_elapsed_minutes == plan["common_overrides"]["max_elapsed_minutes"]
        # side by side: its own rendezvous port and CPU threads, the same configuration otherwise
        side = gpu.run_command(plan, r, python="python3", port=29123, threads=1)
        assert "--standalone" not in side and "--rdzv-endpoint=127.0.0.1:29123" in side
        assert json.loads(side[side.index("--overrides") + 1]) == overrides | {"threads": 1}


def test_a_plan_that_breaks_the_rules_is_refused(gpu, tmp_path):
    plan = json.loads(gpu.PLAN.read_text())
    c = plan["candidates"]
    bad = [dict(plan, candidates=c + c[:1]), dict(plan, seeds=[1, 1, 2]), dict(plan, seeds=[1, "2"]),
           dict(plan, candidates=[{**c[0], "name": "a/b"}]),
           dict(plan, candidates=[c[0], {**c[0], "name": "same-config"}]),
           dict(plan, candidates=[{**c[0], "overrides": {"model": {"filter_c": 5, "objective": "bert4rec"}}}]),
           {k: v for k, v in plan.items() if k != "seeds"}]
    for i, p in enumerate(bad):
        (tmp_path / f"{i}.json").write_text(json.dumps(p))
        with pytest.raises(ValueError):
            gpu.load_plan(tmp_path / f"{i}.json")


def fake_run(gpu, plan, run, root: Path, valid: float, test: float = 0.05) -> None:
    folder = root / run["name"]
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "config": gpu.training_config(plan, run), "valid": {"ndcg@10": valid}, "test": {"ndcg@10": test, "hr@10": 0.1},
        "best_epoch": 3, "epochs_run": 9, "stopped_by": "patience"}))


def test_selection_takes_the_best_mean_validation_and_reads_no_test_figure(gpu, tmp_path):
    """Made-up metrics: the first candidate has the best single seed, the third the best test figures, the second
    the best mean validation; the second is adopted, and the merge reports its three seeds' mean."""
    plan = gpu.load_plan()
    names = [c["name"] for c in plan["candidates"]]
    valid = {names[0]: [0.5, 0.125, 0.0], names[1]: [0.25, 0.25, 0.25], names[2]: [0.125, 0.125, 0.125],
             names[3]: [0.25, 0.125, 0.125]}
    test = {names[2]: 0.9}
    for r in plan["runs"][:-1]:
        fake_run(gpu, plan, r, tmp_path, valid[r["candidate"]][r["seed"] - 1], test.get(r["candidate"], 0.05))
    with pytest.raises(SystemExit, match="not finished"):
        gpu.select(plan, tmp_path)
    merge = gpu.merge_command(plan, tmp_path, "out.json")  # no choice yet: the rows only
    assert "--seed-mean" not in merge and merge.count("--also") == 11 and "no choice made" in merge[-1]
    last = plan["runs"][-1]
    fake_run(gpu, plan, last, tmp_path, valid[last["candidate"]][last["seed"] - 1])
    chosen = gpu.select(plan, tmp_path)
    assert chosen["chosen"] == names[1] and chosen["candidates"][names[1]]["mean_valid_ndcg@10"] == 0.25
    assert chosen["candidates"][names[0]]["mean_valid_ndcg@10"] == pytest.approx(0.625 / 3)
    assert chosen["runs"] == [f"{names[1]}-seed{s}" for s in (1, 2, 3)]
    assert chosen["recipe"] == plan["candidates"][1]["recipe"] and chosen["overrides"] == plan["candidates"][1]["overrides"]
    assert json.loads((tmp_path / "selection.json").read_text()) == chosen
    assert "test" not in json.dumps(chosen["candidates"])
    # a later candidate that ties with the adopted mean: the earlier one stays adopted
    shutil.rmtree(tmp_path / f"{names[3]}-seed2")
    fake_run(gpu, plan, next(r for r in plan["runs"] if r["name"] == f"{names[3]}-seed2"), tmp_path, 0.375)
    again = gpu.select(plan, tmp_path)
    assert again["candidates"][names[3]]["mean_valid_ndcg@10"] == 0.25 and again["chosen"] == names[1]
    # the merge: every run a row, the adopted candidate's seed mean as gpu-adopted, the others exploratory
    merge = gpu.merge_command(plan, tmp_path, "out.json")
    assert merge.count("--also") == 12
    means = dict(merge[i + 1].split("=", 1) for i, a in enumerate(merge) if a == "--seed-mean")
    assert means["gpu-adopted"] == ",".join(f"gpu-{names[1]}-seed{s}" for s in (1, 2, 3))
    assert set(means) == {"gpu-adopted", *(f"gpu-exploratory-{n}" for n in (names[0], names[2], names[3]))}
    assert f"adopted: {names[1]}" in merge[-1] and "0.2500" in merge[-1] and "2026-12-05" in merge[-1]


def test_what_comes_back_fits_the_device_limits_and_is_fetched(gpu, tmp_path, monkeypatch):
    """Twelve runs' files in one JSON; checkpoint tars while the limits allow (8 files, 16 MiB each, 64 MiB in all:
    here 16 KiB each and 60 KiB in all, with checkpoints of random bytes that gzip cannot shrink)."""
    monkeypatch.setattr(gpu, "RETURN_LIMIT", 16 * 2**10)
    monkeypatch.setattr(gpu, "RETURN_TOTAL", 60 * 2**10)
    root, out = tmp_path / "runs", tmp_path / "OUT"
    names = [f"c{i}-seed1" for i in range(12)]
    for i, name in enumerate(names):
        (root / name / "checkpoints" / "best").mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps({"valid": {"ndcg@10": i}, "stopped_by": "max_elapsed_minutes"}))
        (root / name / "run.json").write_text(json.dumps({"name": name}))
        size = 20 * 2**10 if i == 0 else 12 * 2**10  # the first is too big to come back
        (root / name / "checkpoints" / "last.pt").write_bytes(os.urandom(size))
        (root / name / "checkpoints" / "best" / "model.safetensors").write_bytes(b"m" * 100)
        (root / name / "checkpoints" / "best" / "config.json").write_text("{}")
    (root / "failed-seed1").mkdir()
    (root / "failed-seed1" / "run.json").write_text(json.dumps({"returncode": 1}))
    (root / "failed-seed1" / "train.log").write_text("x" * 10000 + "CUDA out of memory")
    gpu.copy_back(root, [*names, "failed-seed1", "not-started-seed1"], out)
    sent = gpu.copy_checkpoint_tars(root, names, out)
    assert sent == names[1:5]  # the JSON and 4 tars of about 12 KiB: a fifth would pass 60 KiB
    files = list(out.iterdir())
    assert len(files) <= gpu.RETURN_FILES and sum(f.stat().st_size for f in files) <= gpu.RETURN_TOTAL
    assert all(f.stat().st_size <= gpu.RETURN_LIMIT for f in files)
    assert sorted(f.name for f in files) == sorted([gpu.RETURNED, *(f"{n}.ckpt.tar.gz" for n in sent)])
    back = json.loads((out / gpu.RETURNED).read_text())["runs"]
    assert set(back) == {*names, "failed-seed1"} and back["failed-seed1"]["metrics"] is None
    assert back["failed-seed1"]["log_tail"].endswith("CUDA out of memory") and len(back["failed-seed1"]["log_tail"]) == 4000
    got = gpu.fetch(out, tmp_path / "here")
    assert sorted(got) == sorted([*names, "failed-seed1"])
    assert json.loads((tmp_path / "here" / names[3] / "metrics.json").read_text())["valid"]["ndcg@10"] == 3
    assert not (tmp_path / "here" / "failed-seed1" / "metrics.json").exists()
    assert (tmp_path / "here" / names[1] / "checkpoints" / "last.pt").read_bytes() == (
        root / names[1] / "checkpoints" / "last.pt").read_bytes()
    assert (tmp_path / "here" / names[1] / "checkpoints" / "best" / "model.safetensors").read_bytes() == b"m" * 100
    assert not (tmp_path / "here" / names[0] / "checkpoints").exists()


def tiny_plan(tmp_path: Path, features: Path, seeds: list[int], epochs: int = 2) -> Path:
    plan = {"features": str(features), "root": str(tmp_path / "runs"), "nproc": 1,
            "common_overrides": {"epochs": epochs, "threads": 1, "batch_size": 64, "max_elapsed_minutes": 1e-6},
            "seeds": seeds, "selection_rule": "mean validation only",
            "candidates": [{"name": "tiny-bsarec", "recipe": "configs/seqrec/bsarec.yaml",
                            "overrides": {"model": {"d_model": 16}}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    return tmp_path / "plan.json"


def test_a_failed_run_stops_no_other_and_the_exit_status_says_so(gpu, tiny_features, tmp_path, monkeypatch):
    """Side by side, the seed-2 run fails at once (a stand-in interpreter) while the seed-1 one goes on, finishes
    and comes back; `run` then exits naming the failure."""
    plan = tiny_plan(tmp_path, tiny_features, [1, 2])
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n" + """import json, os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
if out.endswith("seed2"):
    print("boom"); sys.exit(3)
time.sleep(1.5)
m = {"config": json.load(open(os.environ["CONFIG"])), "valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.1, "hr@10": 0.2},
     "best_epoch": 0, "epochs_run": 1, "stopped_by": "epochs"}
open(os.path.join(out, "metrics.json"), "w").write(json.dumps(m))
""")
    fake.chmod(0o755)
    loaded = gpu.load_plan(plan)
    (tmp_path / "config.json").write_text(json.dumps(gpu.training_config(loaded, loaded["runs"][0])))
    monkeypatch.setenv("CONFIG", str(tmp_path / "config.json"))
    with pytest.raises(SystemExit, match=r"1 of 2 runs failed.*tiny-bsarec-seed2.: 3"):
        gpu.main(["run", "--plan", str(plan), "--allow-cpu", "--parallel", "2", "--python", str(fake),
                  "--copy-to", str(tmp_path / "OUT")])
    back = json.loads((tmp_path / "OUT" / gpu.RETURNED).read_text())["runs"]
    assert back["tiny-bsarec-seed1"]["run"]["returncode"] == 0 and back["tiny-bsarec-seed1"]["metrics"]
    assert back["tiny-bsarec-seed2"]["run"]["returncode"] == 3 and "boom" in back["tiny-bsarec-seed2"]["log_tail"]
    one, two = (json.loads((tmp_path / "runs" / f"tiny-bsarec-seed{s}" / "run.json").read_text()) for s in (1, 2))
    assert two["start_time"] + two["wall_seconds"] < one["start_time"] + one["wall_seconds"]  # seed 1 outlived it


def test_runs_go_side_by_side_end_to_end_into_the_result_file(gpu, tiny_features, tmp_path):
    """Two seeds on the built-in shop, on a CPU, `--parallel 2`: two torchruns at once, each its own port, the budget
    stops both after one epoch; their files and checkpoints come back through $OUT, fetched elsewhere one goes on;
    then the choice and seqrec.py --merge-only add the rows and the adopted seed mean to a result file."""
    plan = tiny_plan(tmp_path, tiny_features, [1, 2])
    args = ["--plan", str(plan), "--allow-cpu", "--copy-to", str(tmp_path / "OUT")]
    gpu.main(["run", "--parallel", "2", "--copy-checkpoints", *args])
    runs = {s: json.loads((tmp_path / "runs" / f"tiny-bsarec-seed{s}" / "run.json").read_text()) for s in (1, 2)}
    ports = {s: [a for a in shlex.split(r["command"]) if a.startswith("--rdzv-endpoint=")] for s, r in runs.items()}
    assert len(ports[1]) == len(ports[2]) == 1 and ports[1] != ports[2]
    assert all(r["returncode"] == 0 and r["parallel"] == 2 for r in runs.values())
    # at once: each started before the other ended
    assert runs[1]["start_time"] < runs[2]["start_time"] + runs[2]["wall_seconds"]
    assert runs[2]["start_time"] < runs[1]["start_time"] + runs[1]["wall_seconds"]
    first = {s: json.loads((tmp_path / "runs" / f"tiny-bsarec-seed{s}" / "metrics.json").read_text()) for s in (1, 2)}
    assert all(m["epochs_run"] == 1 and m["stopped_by"] == "max_elapsed_minutes" for m in first.values())
    assert [m["config"]["seed"] for m in first.values()] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == sorted(
        [gpu.RETURNED, "tiny-bsarec-seed1.ckpt.tar.gz", "tiny-bsarec-seed2.ckpt.tar.gz"])
    assert sorted(gpu.fetch(tmp_path / "OUT", tmp_path / "elsewhere")) == ["tiny-bsarec-seed1", "tiny-bsarec-seed2"]
    assert (tmp_path / "elsewhere" / "tiny-bsarec-seed1" / "checkpoints" / "best" / "model.safetensors").exists()
    # the budget-stopped seed 1 goes on from its checkpoint, one run at a time (the default)
    gpu.main(["run", "--only", "tiny-bsarec-seed1", "--continue-stopped", *args])
    done = json.loads((tmp_path / "runs" / "tiny-bsarec-seed1" / "metrics.json").read_text())
    assert done["epochs_run"] == 2 and done["stopped_by"] == "epochs" and done["history"][0] == first[1]["history"][0]
    run = json.loads((tmp_path / "runs" / "tiny-bsarec-seed1" / "run.json").read_text())
    assert run["returncode"] == 0 and "--standalone" not in run["command"] and len(run["earlier_attempts"]) == 1
    assert json.loads((tmp_path / "OUT" / gpu.RETURNED).read_text())["runs"]["tiny-bsarec-seed1"]["metrics"] == done
    gpu.main(["run", *args])  # both found finished: nothing trains
    assert json.loads((tmp_path / "runs" / "tiny-bsarec-seed2" / "metrics.json").read_text()) == first[2]

    gpu.main(["select", "--plan", str(plan)])
    assert json.loads((tmp_path / "runs" / "selection.json").read_text())["chosen"] == "tiny-bsarec"
    # seed 2 scored under RecBole's protocol too (history kept): the row carries it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "benchmarks/seqrec_protocols.py", "--features", str(tiny_features),
                    str(tmp_path / "runs" / "tiny-bsarec-seed2")], cwd=REPO, check=True, env=env)
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"models": {"shoprec-best": {"ndcg@10": 0.0559}}, "notes": ["old"]}))
    cmd = gpu.merge_command(gpu.load_plan(plan), tmp_path / "runs", str(result))
    subprocess.run(cmd, cwd=REPO, check=True, env=env)
    merged = json.loads(result.read_text())
    kept = merged["models"]["gpu-tiny-bsarec-seed2"]["test_recbole_protocol"]
    assert {"ndcg@10", "hr@10", "command"} <= set(kept) and "seqrec_protocols.py" in kept["command"]
    assert "test_recbole_protocol" not in merged["models"]["gpu-tiny-bsarec-seed1"]
    assert set(merged["models"]) == {"shoprec-best", "gpu-tiny-bsarec-seed1", "gpu-tiny-bsarec-seed2"}
    row = merged["models"]["gpu-tiny-bsarec-seed2"]
    assert row["trained_by"]["seed"] == 2 and "--merge-only" in row["command"]
    assert row["stopped_by"] == "max_elapsed_minutes" and merged["models"]["gpu-tiny-bsarec-seed1"]["stopped_by"] == "epochs"
    adopted = merged["seed_means"]["gpu-adopted"]
    assert adopted["rows"] == ["gpu-tiny-bsarec-seed1", "gpu-tiny-bsarec-seed2"]
    assert adopted["ndcg@10"] == pytest.approx((done["test"]["ndcg@10"] + first[2]["test"]["ndcg@10"]) / 2)
    assert adopted["valid_ndcg@10"] == pytest.approx((done["valid"]["ndcg@10"] + first[2]["valid"]["ndcg@10"]) / 2)
    assert {e["seed"] for e in adopted["each"].values()} == {1, 2}
    assert merged["notes"][0] == "old" and "adopted: tiny-bsarec" in merged["notes"][-1]
    assert merged["published"]["BSARec"]["ndcg@10"] == 0.0611
    # a plan's row_prefix and title name its rows and note (the CPU plan's are cpu-*)
    cpu_plan = json.loads(plan.read_text()) | {"row_prefix": "cpu", "title": "CPU runs of a tiny plan"}
    plan.write_text(json.dumps(cpu_plan))
    cmd = gpu.merge_command(gpu.load_plan(plan), tmp_path / "runs", str(result))
    assert "cpu-adopted=cpu-tiny-bsarec-seed1,cpu-tiny-bsarec-seed2" in cmd and "gpu-" not in " ".join(cmd[:-1])
    assert cmd[-1].startswith("CPU runs of a tiny plan") and "seed_means['cpu-adopted']" in cmd[-1]


def test_beauty_features_are_prepared_for_the_device(gpu, tmp_path):
    if not BEAUTY.exists():
        pytest.skip(f"{BEAUTY} not here")
    feats = gpu.prepare(BEAUTY, tmp_path)
    from shoprec.data.features import load_items, load_sequences

    users, _ = load_sequences(feats)
    items = load_items(feats)
    assert len(users) == 22363 and len(items) == 12101 and "attributes" in items
    assert sum(f.stat().st_size for f in feats.rglob("*") if f.is_file()) < 16 * 2**20  # carried to the device
