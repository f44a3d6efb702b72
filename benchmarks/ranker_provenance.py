"""Make every figure in the ranker result files one that a script wrote, with its command in the file.

    .venv/bin/python benchmarks/ranker_provenance.py homedepot --restore-from cb4b419
    .venv/bin/python benchmarks/ranker_provenance.py pseudolabel
    .venv/bin/python benchmarks/ranker_provenance.py games
    .venv/bin/python benchmarks/ranker_provenance.py bm25grid

Nothing is trained or scored. What it does to ``ranker-homedepot.json``:

- a row (any JSON object with ``made_by``) whose ``made_by`` is neither the file's ``command`` nor one of its
  ``earlier_commands`` was not written into this file by that chain of ``ranker.py --keep`` runs: it was
  copied in by hand from another run's output. Such rows are removed (commit 6acfcce copied the session-8
  ``full-cross`` rows this way from ``.shoprec/rk-hd10/results.json``, which no longer exists);
- keys no script writes (``HAND_WRITTEN``: notes, the session-4/5 ``exploratory`` rows, the ``matched`` LoRA/full
  pair, ``adopted_lora_cross``) are removed: their figures were copied by hand from run outputs that are gone;
- a removed row that a script wrote in the file as of ``--restore-from`` (a git revision) is put back from
  there, with the command that made it;
- ``targets`` is recomputed by ``ranker.targets``; ``notes`` and ``provenance`` are written here, without figures.

For ``ranker-pseudolabel.json``, the hand-written ``notes`` and ``conclusion`` (which quoted optimizer steps from
a log no key holds) are replaced by a conclusion made from the ``mean`` block. For ``ranker-games.json``,
``test_sample_history`` says which test users every recorded run scored and how many configurations each stretch
of them has seen, and the note that called the adopted run "the second configuration looked at" is corrected.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# keys no script writes, and where their figures came from
HAND_WRITTEN = {
    ("notes",): "free text edited by hand in every session; partly contradicted the rows (replaced by notes written here)",
    ("made_with_commands_note",): "hand-written; replaced by the provenance block",
    ("earlier_full_cross",): "added by hand in 6acfcce",
    ("adopted_lora_cross",): "added by hand in 4339de7 (its figures duplicate training.lora-cross; its note quoted a "
                             "step-time measurement that no key holds)",
    ("lora_vs_full_same_data", "matched"): "copied by hand in 4339de7 from .shoprec/rk-hd6/results-pair.json, which "
                                           "no longer exists",
    ("lora_vs_full_same_data", "note"): "hand-written note about the matched pair",
    ("exploratory", "lora-cross max_len 48, 2 epochs (session 4)"): "copied by hand from .shoprec/rk-hd4/results.json "
                                                                      "(gone)",
    ("exploratory", "lora-cross lr 5e-4 (session 4)"): "copied by hand from .shoprec/rk-hd5/results.json (gone)",
    ("exploratory", "lora-cross lr 5e-4, 48 tokens, 2 epochs (session 4)"): "copied by hand from "
                                                                              ".shoprec/rk-hd6/results.json (gone)",
    ("exploratory", "lora-cross, all judged pairs + hard negatives, 48 tokens, 2 epochs (session 5)"):
        "copied by hand from .shoprec/rk-hd7/results.json (gone)",
}
# sections whose rows ranker.py writes (and --keep carries forward)
ROW_SECTIONS = ("rerank", "retrieve", "training", "significance")


def git_json(rev: str, path: Path) -> dict:
    """The file as committed at ``rev``."""
    rel = path.resolve().relative_to(REPO)
    text = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout
    return json.loads(text)


def chain(res: dict) -> set[str]:
    """The commands whose output this file carries: its command and the earlier ones ``--keep`` recorded."""
    return {res.get("command")} | set(res.get("earlier_commands", []))


def foreign_rows(res: dict) -> list[tuple[str, ...]]:
    """Paths of rows whose ``made_by`` is a command outside the file's chain (copied in by hand)."""
    known = chain(res)
    out = []

    def walk(node, path):
        if isinstance(node, dict):
            if isinstance(node.get("made_by"), str) and node["made_by"] not in known:
                out.append(path)
                return
            for k, v in node.items():
                walk(v, path + (k,))

    for sec in ROW_SECTIONS + ("valid", "targets"):
        walk(res.get(sec, {}), (sec,))
    return out


def get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def pop(d: dict, path: tuple[str, ...]):
    for k in path[:-1]:
        d = d.get(k, {})
    return d.pop(path[-1], None)


def put(d: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def significance_maker(res: dict, key: str) -> str | None:
    """ranker.py computes ``significance["<row> - bm25"]`` in the run that scores ``<row>``: that row's made_by
    (the file's command when the row has none)."""
    row = get(res, ("rerank", key.split(" - ")[0]))
    return None if row is None else row.get("made_by", res["command"])


def restorable(old: dict, path: tuple[str, ...]):
    """The row at ``path`` in an earlier version of the file, if a script in that file's chain wrote it."""
    row = get(old, path)
    if not isinstance(row, dict):
        return None
    row = json.loads(json.dumps(row))
    maker = row.get("made_by") or (significance_maker(old, path[-1]) if path[0] == "significance" else old["command"])
    if maker not in chain(old):
        return None
    row["made_by"] = maker
    return row


def commands_in(node) -> list[str]:
    """Every ranker.py command string recorded anywhere in ``node`` (command, made_by, trained_by, earlier_commands)."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("command", "made_by", "trained_by", "earlier_commands"):
                out += [c for c in (v if isinstance(v, list) else [v]) if isinstance(c, str) and "ranker.py" in c]
            else:
                out += commands_in(v)
    elif isinstance(node, list):
        for v in node:
            out += commands_in(v)
    return list(dict.fromkeys(out))


def model_folders(res: dict, commands: list[str]) -> dict:
    """For each saved model the ensembles block scored (``rk-hdN/<stage>``): the recorded commands that trained it
    (those of that --save-dir running that stage without --reuse; else those that reused it)."""
    block = res.get("exploratory", {}).get("cross-encoder ensembles", {})
    folders = sorted({m for row in block.get("combinations", []) for m in row["models"]})
    out = {}
    for folder in folders:
        save_dir, stage = folder.rsplit("/", 1)
        hits = []
        for c in commands:
            args = shlex.split(c)
            opt = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
            if opt.get("--save-dir", "").rstrip("/").endswith(save_dir) and stage in opt.get("--stages", "").split(","):
                hits.append(c)
        trained = [c for c in hits if "--reuse" not in shlex.split(c)]
        out[folder] = {"trained_by" if trained else "loaded_by": trained or hits}
    return out


def clean_homedepot(res: dict, old: dict | None, rev: str | None, command: str) -> dict:
    import ranker

    res = json.loads(json.dumps(res))
    recorded_commands = commands_in(res)
    earlier = res.pop("provenance", {})  # a second pass keeps what the first removed and restored
    if earlier:
        res.pop("notes", None)  # written by the first pass, written again below
    removed, restored = list(earlier.get("removed", [])), list(earlier.get("restored", []))
    for path in foreign_rows(res):
        if path[0] == "targets":  # recomputed below
            pop(res, path)
            continue
        pop(res, path)
        removed.append({"key": "/".join(path), "why": "its made_by is not a command of this file's chain: copied in "
                                                       "by hand from another run's output"})
        back = restorable(old, path) if old is not None else None
        if back is not None:
            put(res, path, back)
            restored.append({"key": "/".join(path), "from": f"this file at git revision {rev}",
                             "made_by": back["made_by"]})
    for key, row in res.get("significance", {}).items():  # ranker.py --keep did not label these: say who made them
        if isinstance(row, dict) and "made_by" not in row:
            row["made_by"] = significance_maker(res, key) or res["command"]
    for path, why in HAND_WRITTEN.items():
        if get(res, path) is not None:
            pop(res, path)
            removed.append({"key": "/".join(path), "why": why})
    if "cross-encoder ensembles" in res.get("exploratory", {}):
        res["exploratory"]["cross-encoder ensembles"]["model_folders"] = model_folders(res, recorded_commands)
    res["targets"] = ranker.targets(res)
    res["notes"] = homedepot_notes(res)
    res["provenance"] = {
        "command": command,
        "earlier_commands": earlier.get("earlier_commands", []) + ([earlier["command"]] if earlier else []),
        "rule": ("every row carries the command that wrote it (made_by) or was written by this file's command; a row "
                 "whose command is neither this file's nor one of its earlier_commands, and every key no script "
                 "writes, was removed; a removed row a script wrote in an earlier version of this file was restored "
                 "from it; notes, targets and exploratory['cross-encoder ensembles'].model_folders are written by "
                 "this command"),
        "removed": removed, "restored": restored}
    return res


def homedepot_notes(res: dict) -> list[str]:
    """What the rows are, from the rows themselves (no figures: those are in the keys)."""
    makers = {}
    for sec in ROW_SECTIONS:
        for name, row in res.get(sec, {}).items():
            if isinstance(row, dict):
                makers.setdefault(row.get("made_by", res["command"]), []).append(f"{sec}/{name}")
    notes = ["Which command wrote which rows (a row's made_by, or this file's command for a row without one; every "
             "such command is this file's command or in earlier_commands):"]
    for cmd, rows in makers.items():
        notes.append(f"{', '.join(sorted(rows))}: {cmd}")
    notes.append("Re-rank NDCG@10 is tie-aware (the expected value over the orders of tied scores) over the test "
                 "queries whose judged products differ in relevance (rerank.*.queries); rerank.constant is the "
                 "all-tied score.")
    if "full-cross" in res.get("rerank", {}):
        notes.append("rerank/full-cross is the fully fine-tuned cross-encoder its made_by command trained: "
                     "training/full-cross.config's 'the same groups as lora-cross' means that command's lora-cross "
                     "data (its --train-pairs and --hard-negs), not this file's training/data; it is not a twin of the "
                     "adopted lora-cross. The same-data LoRA/full pair the targets use is "
                     "lora_vs_full_same_data.earlier (that command's lora-cross and full-cross).")
    notes.append("The adopted lora-cross's fully fine-tuned twin (session 8) and the session-4/5 exploratory "
                 "cross-encoders were trained, but their outputs no longer exist and their rows had been copied in "
                 "by hand, so they are not in this file (provenance.removed). The session-3 to 5 models that were "
                 "still saved when ranker_ensemble.py ran are scored there one by one (exploratory['cross-encoder "
                 "ensembles'].combinations, single-model rows; model_folders names the commands that trained them).")
    return notes


def clean_pseudolabel(res: dict, command: str) -> dict:
    res = json.loads(json.dumps(res))
    removed = [k for k in ("notes", "conclusion") if res.pop(k, None) is not None]
    soft = res["mean"]["soft"]
    better = soft.get("seeds_student_better_than_control", {}).get("search_ndcg@10")
    res["conclusion"] = {
        "written_by": command,
        "soft_student_minus_teacher": soft["student_minus_teacher"],
        "soft_student_minus_control": soft.get("student_minus_control"),
        "seeds_soft_student_better_than_control_ndcg@10": better,
        "seeds": len(res["seeds"]),
        "text": ("Pseudo-labelling stays off: the soft student's gain over the teacher is matched or beaten by the "
                 "labelled-only control with about the student's optimizer steps (mean.*.control, "
                 "seeds_student_better_than_control)" if soft.get("student_minus_control", {}).get(
                     "search_ndcg@10", 0.0) <= 0 else "The soft student beats the control on mean search NDCG@10."),
        "removed": [f"{k}: hand-written" + (" (quoted optimizer steps from a log that no key holds)" if k == "notes"
                                            else "") for k in removed]}
    return res


# ------------------------------------------------------------------ ranker-games.json
CONFIG_IGNORED = {"--out", "--reuse", "--progress", "--test-users", "--threads", "--note", "--work", "--test-start"}
STALE_GAMES_NOTE = ("It is the second cross-encoder configuration looked at on these test users (vs_replaced pairs the "
                    "two).")


def command_flags(command: str) -> dict[str, str]:
    """``--flag value`` pairs of a ranker_games.py command (a flag without a value maps to "")."""
    args = shlex.split(command)
    args = args[next(i for i, a in enumerate(args) if a.endswith("ranker_games.py")) + 1:]
    out, i = {}, 0
    while i < len(args):
        if args[i].startswith("--"):
            has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            out[args[i]] = args[i + 1] if has_value else ""
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def run_configuration(command: str) -> tuple:
    """What a run's figures depend on besides its test sample: its flags as written (defaults changed between
    sessions, so flags left out are compared as left out), less output, reuse, threads and sample size."""
    return tuple(sorted((k, v) for k, v in command_flags(command).items() if k not in CONFIG_IGNORED))


def test_sample_of(run: dict) -> tuple[int, int]:
    """(first, end) positions of a run's test users in the seeded permutation."""
    sampling = run.get("sampling") or {}
    n = sampling.get("test_users") or int(command_flags(run["command"]).get("--test-users", 3000))
    start = sampling.get("test_start", 0)
    return start, start + n


def test_sample_history(res: dict) -> dict:
    """Every recorded run (earlier_runs in order, then this one): its test users and gain; for each stretch of the
    permutation, how many runs and distinct configurations were scored on it."""
    runs = list(res.get("earlier_runs", {}).items()) + [("this result", res)]
    rows = []
    for label, run in runs:
        first, end = test_sample_of(run)
        t = run.get("target", {})
        rows.append({"run": label, "test_users": [first, end], "relative_gain": t.get("relative_gain"),
                     "relative_gain_ci95": t.get("relative_gain_ci95"), "met": t.get("met")})
    cuts = sorted({p for r in rows for p in r["test_users"]})
    stretches = []
    for lo, hi in zip(cuts, cuts[1:]):
        on = [(label, run) for (label, run), r in zip(runs, rows) if r["test_users"][0] <= lo and hi <= r["test_users"][1]]
        if on:
            stretches.append({"test_users": [lo, hi], "runs": len(on),
                              "configurations": len({run_configuration(run["command"]) for _, run in on}),
                              "run_labels": [label for label, _ in on]})
    grown = [{"after": rows[i - 1]["run"], "from": rows[i - 1]["test_users"], "to": rows[i]["test_users"],
              "gain_before": rows[i - 1]["relative_gain"], "target_met_before": rows[i - 1]["met"]}
             for i in range(1, len(rows)) if rows[i]["test_users"][1] > rows[i - 1]["test_users"][1]]
    return {"what": ("the test users (positions in the seeded permutation) each recorded run scored, and how many "
                     "runs and distinct configurations (command flags less output, reuse, threads and sample size) "
                     "were scored on each stretch"),
            "runs": rows, "stretches": stretches, "sample_grown": grown}


def ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth"}.get(n, f"{n}th")


def clean_games(res: dict, command: str) -> dict:
    res = json.loads(json.dumps(res))
    history = test_sample_history(res)
    res["test_sample_history"] = history
    corrected = "; ".join(
        f"the {ordinal(s['configurations'])} configuration ({s['runs']} runs) scored on test users "
        f"{s['test_users'][0]:,}-{s['test_users'][1]:,}" for s in history["stretches"]
        if "this result" in s["run_labels"])
    replaced = []
    for i, note in enumerate(res.get("notes", [])):
        if STALE_GAMES_NOTE in note:
            res["notes"][i] = note.replace(STALE_GAMES_NOTE, f"It is {corrected} (test_sample_history).")
            replaced.append(i)
    res["provenance"] = {"command": command,
                         "what": ("test_sample_history is made from earlier_runs and this result; a note that called "
                                  "this run the second configuration looked at on its test users (true of users "
                                  "3,000-8,000 only) is corrected in place"),
                         "notes_corrected": replaced}
    return res


def clean_bm25_grid(res: dict, command: str) -> dict:
    """The hand-written note (figures typed in) becomes bm25_grid.grid_summary of the rows."""
    import bm25_grid

    res = json.loads(json.dumps(res))
    res.pop("note", None)
    res["summary"] = {**bm25_grid.grid_summary(res), "written_by": command}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="file", required=True)
    h = sub.add_parser("homedepot")
    h.add_argument("--path", default=str(RESULTS / "ranker-homedepot.json"))
    h.add_argument("--restore-from", default=None, help="git revision of the file to restore removed rows from")
    p = sub.add_parser("pseudolabel")
    p.add_argument("--path", default=str(RESULTS / "ranker-pseudolabel.json"))
    g = sub.add_parser("games")
    g.add_argument("--path", default=str(RESULTS / "ranker-games.json"))
    b = sub.add_parser("bm25grid")
    b.add_argument("--path", default=str(RESULTS / "bm25-grid-homedepot.json"))
    a = ap.parse_args()
    command = shlex.join([".venv/bin/python", "benchmarks/ranker_provenance.py", *sys.argv[1:]])
    path = Path(a.path)
    res = json.loads(path.read_text())
    if a.file == "homedepot":
        old = git_json(a.restore_from, path) if a.restore_from else None
        out = clean_homedepot(res, old, a.restore_from, command)
        print(json.dumps(out["provenance"], indent=1))
    elif a.file == "bm25grid":
        out = clean_bm25_grid(res, command)
        print(json.dumps(out["summary"], indent=1))
    elif a.file == "games":
        out = clean_games(res, command)
        print(json.dumps(out["test_sample_history"]["stretches"], indent=1))
    else:
        out = clean_pseudolabel(res, command)
        print(json.dumps(out["conclusion"], indent=1))
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
