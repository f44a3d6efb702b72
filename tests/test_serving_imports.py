"""Serving never loads training: the server and what it imports with --ranker stay clear of the fit loop."""

import json
import subprocess
import sys

TRAINING = ("shoprec.trainer", "shoprec.trainer.loop", "shoprec.seqrec.train", "shoprec.seqrec.launch", "shoprec.ranker.train",
            "shoprec.seqrec.ensemble", "shoprec.trainer.checkpoints")


def test_the_server_and_the_ranker_it_loads_import_no_training_module():
    code = ("import json, sys, shoprec.serving.app, shoprec.ranker.models, shoprec.ranker.search, shoprec.seqrec.recommend\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shoprec'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                       text=True).stdout)
    assert "shoprec.ranker.models" in loaded  # the check ran the imports it names
    assert not set(TRAINING) & set(loaded), sorted(set(TRAINING) & set(loaded))


def test_the_ranker_package_still_offers_its_whole_api():
    import shoprec.ranker as ranker

    assert ranker.train_ranker.__module__ == "shoprec.ranker.train"
    assert ranker.load_ranker.__module__ == "shoprec.ranker.models"
    assert sorted(ranker.__all__) == sorted(n for n in ranker.__all__ if getattr(ranker, n))
