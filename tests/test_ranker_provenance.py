"""benchmarks/ranker_provenance.py: rows copied in by hand leave ranker-homedepot.json, a row a script wrote in an
earlier version comes back from it, and the committed result files hold no hand-written keys or foreign rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import ranker_provenance as rp  # noqa: E402

RUN, OLD_RUN, ELSEWHERE = "ranker.py --stages lora-cross", "ranker.py --stages full-cross", "ranker.py --out /gone"


def result(full_cross_by: str) -> dict:
    return {"command": RUN, "earlier_commands": [OLD_RUN],
            "rerank": {"bm25": {"ndcg@10": 0.92}, "lora-cross": {"ndcg@10": 0.93, "rmse": 0.46},
                       "full-cross": {"ndcg@10": 0.95, "rmse": 0.40, "made_by": full_cross_by}},
            "training": {"full-cross": {"train_seconds": 10.0, "made_by": full_cross_by}},
            "significance": {"lora-cross - full-cross": {"diff": -0.02, "ci95": [-0.03, -0.01], "made_by": full_cross_by},
                             "lora-cross - bm25": {"diff": 0.01, "ci95": [0.0, 0.02]}},
            "targets": {"stale": {"value": 1, "met": True, "made_by": full_cross_by}},
            "notes": "hand-written", "adopted_lora_cross": {"train_seconds": 1.0},
            "lora_vs_full_same_data": {"earlier": [{"diff": -0.003, "ci95": [-0.006, 0.001], "made_by": OLD_RUN}],
                                       "matched": {"diff": 0.001, "ci95": [-0.002, 0.004]}}}


def test_foreign_rows_are_removed_and_a_scripts_earlier_row_restored():
    old = result(OLD_RUN)
    old["rerank"]["full-cross"].update({"ndcg@10": 0.924, "rmse": 0.48})
    del old["significance"]["lora-cross - full-cross"]
    out = rp.clean_homedepot(result(ELSEWHERE), old, "abc123", "ranker_provenance.py homedepot")
    assert out["rerank"]["full-cross"] == {"ndcg@10": 0.924, "rmse": 0.48, "made_by": OLD_RUN}
    assert out["training"]["full-cross"]["made_by"] == OLD_RUN
    assert "lora-cross - full-cross" not in out["significance"]  # not in the old file: gone, not restored
    assert out["significance"]["lora-cross - bm25"]["made_by"] == RUN  # unlabelled: the file's command made it
    for key in ("adopted_lora_cross",):
        assert key not in out
    assert "matched" not in out["lora_vs_full_same_data"]
    assert "stale" not in out["targets"]  # recomputed by ranker.targets: the same-data pair is the earlier one
    same_data = out["targets"]["lora within 0.005 re-rank ndcg@10 of full (same data)"]
    assert same_data["value"] == -0.003 and same_data["made_by"] == OLD_RUN
    assert out["targets"]["cross-encoder re-rank ndcg@10 >= 0.935"]["full-cross"] == 0.924
    removed = {r["key"] for r in out["provenance"]["removed"]}
    assert {"rerank/full-cross", "training/full-cross", "significance/lora-cross - full-cross", "notes",
            "adopted_lora_cross", "lora_vs_full_same_data/matched"} <= removed
    assert {r["key"] for r in out["provenance"]["restored"]} == {"rerank/full-cross", "training/full-cross"}
    assert out["provenance"]["command"] == "ranker_provenance.py homedepot"
    assert isinstance(out["notes"], list) and all(isinstance(n, str) for n in out["notes"])


def test_without_an_earlier_version_foreign_rows_are_only_removed():
    out = rp.clean_homedepot(result(ELSEWHERE), None, None, "cmd")
    assert "full-cross" not in out["rerank"] and out["provenance"]["restored"] == []


def test_rows_of_the_chain_are_kept_as_they_are():
    res = result(OLD_RUN)
    out = rp.clean_homedepot(res, None, None, "cmd")
    assert out["rerank"]["full-cross"] == res["rerank"]["full-cross"]
    assert out["significance"]["lora-cross - full-cross"] == res["significance"]["lora-cross - full-cross"]


def test_committed_homedepot_file_has_no_foreign_rows_or_hand_written_keys():
    res = json.loads((REPO / "benchmarks" / "results" / "ranker-homedepot.json").read_text())
    assert rp.foreign_rows(res) == []
    assert all(rp.get(res, path) is None for path in rp.HAND_WRITTEN if path != ("notes",))
    assert res["provenance"]["command"].startswith(".venv/bin/python benchmarks/ranker_provenance.py homedepot")
    chain = rp.chain(res)
    for sec in ("rerank", "retrieve", "training", "significance"):
        for name, row in res[sec].items():
            assert row.get("made_by", res["command"]) in chain, (sec, name)


@pytest.mark.parametrize("name", ["ranker-pseudolabel.json"])
def test_committed_pseudolabel_conclusion_is_made_from_its_mean_block(name):
    res = json.loads((REPO / "benchmarks" / "results" / name).read_text())
    assert "notes" not in res
    assert res["conclusion"]["soft_student_minus_control"] == res["mean"]["soft"]["student_minus_control"]
    assert res["conclusion"]["written_by"].startswith(".venv/bin/python benchmarks/ranker_provenance.py")


def test_committed_model_folders_name_the_commands_that_trained_each_scored_model():
    res = json.loads((REPO / "benchmarks" / "results" / "ranker-homedepot.json").read_text())
    block = res["exploratory"]["cross-encoder ensembles"]
    scored = {m for row in block["combinations"] for m in row["models"]}
    assert set(block["model_folders"]) == scored
    for folder, made in block["model_folders"].items():
        (cmds,) = made.values()
        assert cmds and all(f"--save-dir .shoprec/{folder.split('/')[0]}" in c for c in cmds), folder


def games_run(flags: str, n_test: int | None, gain: float, met: bool) -> dict:
    run = {"command": f".venv/bin/python benchmarks/ranker_games.py {flags} --out x.json",
           "target": {"relative_gain": gain, "relative_gain_ci95": [gain - 0.03, gain + 0.03], "met": met}}
    if n_test is not None:
        run["sampling"] = {"test_users": n_test}
    return run


def test_games_history_counts_runs_and_configurations_per_stretch_of_test_users():
    res = games_run("--reuse --train-users 8000 --test-users 8000 --threads 2", 8000, 0.074, True)
    res["notes"] = ["Session 11: fixed in advance. " + rp.STALE_GAMES_NOTE]
    res["earlier_runs"] = {
        "a": games_run("--train-users 2000 --test-users 3000", None, 0.053, True),  # no sampling: from the command
        "b": games_run("--reuse --train-users 4000", 3000, 0.044, False),
        "c": games_run("--train-users 4000 --test-users 8000", 8000, 0.047, False),  # b's configuration, more users
    }
    out = rp.clean_games(res, "cmd")
    h = out["test_sample_history"]
    assert [r["test_users"] for r in h["runs"]] == [[0, 3000], [0, 3000], [0, 8000], [0, 8000]]
    assert [(s["test_users"], s["runs"], s["configurations"]) for s in h["stretches"]] == [
        ([0, 3000], 4, 3), ([3000, 8000], 2, 2)]
    assert h["sample_grown"] == [{"after": "b", "from": [0, 3000], "to": [0, 8000], "gain_before": 0.044,
                                  "target_met_before": False}]
    assert out["notes"] == ["Session 11: fixed in advance. It is the third configuration (4 runs) scored on test users "
                            "0-3,000; the second configuration (2 runs) scored on test users 3,000-8,000 "
                            "(test_sample_history)."]
    assert out["provenance"] == {**out["provenance"], "command": "cmd", "notes_corrected": [0]}


def test_committed_games_file_has_its_history_and_no_stale_note():
    res = json.loads((REPO / "benchmarks" / "results" / "ranker-games.json").read_text())
    assert res["test_sample_history"] == rp.test_sample_history(res)
    assert not any(rp.STALE_GAMES_NOTE in n for n in res["notes"])
    first = res["test_sample_history"]["stretches"][0]
    assert first["test_users"] == [0, 3000] and first["configurations"] == 5 and first["runs"] == 6


def test_bm25_grid_summary_is_computed_from_its_rows():
    import bm25_grid

    def row(method, k1, b, c):
        return {"method": method, "k1": k1, "b": b, "fused": {"recall@100": c, "ndcg@10": 0.0}}

    out = {"best": {"method": "a", "k1": 0.4, "b": 0.35}, "defaults_in_SearchSettings": {"method": "b", "k1": 0.4, "b": 0.5},
           "rows": [row("a", 0.4, 0.35, 1.2), row("b", 0.4, 0.5, 1.19), row("a", 0.4, 0.75, 1.15), row("a", 1.5, 0.5, 1.0)]}
    s = bm25_grid.grid_summary(out)
    assert s["best_k1_rows_spread"] == pytest.approx(0.05) and s["best_minus_default"] == pytest.approx(0.01)
    assert s["note"] == ("all k1=0.4 rows are within 0.0500 of each other on the criterion; the best row and "
                         "SearchSettings' b/0.4/0.5 differ by 0.0100")
    committed = json.loads((REPO / "benchmarks" / "results" / "bm25-grid-homedepot.json").read_text())
    assert "note" not in committed
    assert {k: v for k, v in committed["summary"].items() if k != "written_by"} == bm25_grid.grid_summary(committed)


def test_a_second_pass_keeps_the_first_passs_record():
    first = rp.clean_homedepot(result(ELSEWHERE), None, None, "first")
    second = rp.clean_homedepot(first, None, None, "second")
    assert second["provenance"]["removed"] == first["provenance"]["removed"]
    assert second["provenance"]["earlier_commands"] == ["first"] and second["provenance"]["command"] == "second"
    assert second["notes"] == first["notes"] and second["rerank"] == first["rerank"]
