"""make demo's console: one line per pipeline step, read from kfp.local's log, the detail kept in a file."""

import sys

import pytest

from shoprec.pipeline.demo import batch_line, step_events, steps_only


def test_step_events_read_kfp_local_lines_with_colours():
    assert step_events("17:01:02.3 - INFO - Executing task \x1b[96m'day-features'\x1b[0m") == ("day-features", "started")
    assert step_events("INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m") == \
        ("train", "FAILURE")
    assert step_events("INFO - Task 'train' outputs:") is None
    assert step_events('    "outputFile": "/x/train/executor_output.json"') is None


def test_steps_only_keeps_detail_in_the_log_and_shows_steps(tmp_path, capsys):
    log = tmp_path / "demo.log"
    with steps_only(log):
        print("INFO - Executing task 'ingest'")
        print('{"inputs": {"huge": "executor input"}}')
        print("INFO - Executing task 'ingest'")  # the next day: shown once
        print("warning from a library", file=sys.stderr)
    shown = capsys.readouterr().out
    assert shown == "   step: ingest\n"
    assert "executor input" in log.read_text() and "warning from a library" in log.read_text()


def test_no_logging_handler_is_left_on_the_closed_log(tmp_path, capsys):
    import logging

    with steps_only(tmp_path / "demo.log"):
        logging.getLogger("some.library").addHandler(logging.StreamHandler(sys.stdout))  # bound to the log
    logging.getLogger("some.library").warning("after the pipeline")  # would be a 'Logging error'
    assert "Logging error" not in capsys.readouterr().err


def test_a_failure_shows_the_end_of_the_log(tmp_path, capsys):
    with pytest.raises(RuntimeError), steps_only(tmp_path / "demo.log"):
        print("INFO - Task 'evaluate' finished with status FAILURE")
        print("Traceback: the real error")
        raise RuntimeError("pipeline failed")
    shown = capsys.readouterr().out
    assert "step evaluate: FAILURE" in shown and "the pipeline failed; the end of its log:" in shown
    assert "Traceback: the real error" in shown


def test_the_batch_line_says_how_many_shoppers_and_where():
    recs = {"shoppers": 1975, "k": 20, "rows": 39500, "shards": 2, "model_name": "shoprec-seqrec", "version": "3",
            "date": "2026-12-05", "uri": "/x/recommendations/date=2026-12-05/version=3"}
    assert batch_line(recs) == ("batch: 1975 shoppers got their top-20 (39500 rows, 2 shards, shoprec-seqrec v3, "
                                "2026-12-05) written to /x/recommendations/date=2026-12-05/version=3")
    assert "no recommendations" in batch_line(None)
