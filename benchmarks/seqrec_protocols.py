"""A finished run's test figures under RecBole's protocol too, so shoprec rows and RecBole peers compare both ways.

shoprec's protocol removes each shopper's earlier items from the candidates; RecBole's full-sort protocol for
sequential models ranks every item, history included (``benchmarks/recbole_peer.py`` reports RecBole's peers under
both). This loads a run's saved best model (the folder ``shoprec.seqrec.train`` wrote) and scores the test split
with the history kept (ties still count against the target), writing ``test_recbole_protocol.json`` into the run
folder with its command; ``benchmarks/seqrec.py --merge-only --also NAME=FOLDER`` puts it in the row.

    .venv/bin/python benchmarks/seqrec_protocols.py --features .gpu-beauty/prep/features .cpu-beauty/bsarec-grouped-seed1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shoprec import metrics  # noqa: E402
from shoprec.data.features import load_sequences  # noqa: E402
from shoprec.seqrec.model import load_model  # noqa: E402
from shoprec.seqrec.train import evaluate_split  # noqa: E402

RESULT = "test_recbole_protocol.json"


def both_protocols(run: Path, seqs: list[list[int]], batch_size: int = 512) -> dict:
    """Test metrics of ``run``'s saved model with the history removed (shoprec) and kept (RecBole)."""
    model = load_model(run)
    with torch.no_grad():
        removed = metrics.finish(evaluate_split(model, seqs, "test", batch_size, "cpu"))
        kept = metrics.finish(evaluate_split(model, seqs, "test", batch_size, "cpu", remove_history=False))
    return {"test_shoprec_protocol": removed, "test_recbole_protocol": kept}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders with a saved model and metrics.json")
    ap.add_argument("--features", required=True, help="the features the runs were trained on")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    command = shlex.join(["python", "benchmarks/seqrec_protocols.py", *(argv if argv is not None else sys.argv[1:])])
    _, seqs = load_sequences(a.features)
    for run in a.runs:
        out = both_protocols(run, seqs)
        saved = json.loads((run / "metrics.json").read_text())["test"]["ndcg@10"]
        if abs(out["test_shoprec_protocol"]["ndcg@10"] - saved) > 1e-6:  # the same model as the run tested
            raise SystemExit(f"{run}: test NDCG@10 {out['test_shoprec_protocol']['ndcg@10']:.6f} here, "
                             f"{saved:.6f} in its metrics.json: not the run's best model")
        (run / RESULT).write_text(json.dumps(out | {"command": command}, indent=2) + "\n")
        print(f"{run}: test NDCG@10 {out['test_shoprec_protocol']['ndcg@10']:.4f} (history removed), "
              f"{out['test_recbole_protocol']['ndcg@10']:.4f} (history kept, RecBole's protocol)")


if __name__ == "__main__":
    main()
