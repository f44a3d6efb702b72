"""benchmarks/recbole_peer.py's atomic files, without RecBole: the interactions and SASRecF's item features."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

@pytest.fixture(scope="module")
def peer(load_benchmark):
    return load_benchmark("recbole_peer")


def test_loading_the_script_changes_nothing_global(peer):
    assert not hasattr(np, "float") and torch.load.__module__.startswith("torch")
    assert "recbole" not in sys.modules


def test_item_features_are_one_token_seq_field_per_item(peer, tmp_path):
    (tmp_path / "Beauty.txt").write_text("1 4 83 165\n2 83 4 12\n")
    table = {"4": [1, 2, 3], "83": [4, 5], "165": [7, 8, 9, 10], "12": [3]}
    (tmp_path / "Beauty_item2attributes.json").write_text(json.dumps(table))
    seqs = peer.write_atomic(tmp_path / "Beauty.txt", tmp_path / "data" / "beauty", "beauty")
    items = {i for s in seqs.values() for i in s}
    n = peer.write_item_features(tmp_path / "Beauty_item2attributes.json", tmp_path / "data" / "beauty", "beauty", items)
    assert n == 4
    lines = (tmp_path / "data" / "beauty" / "beauty.item").read_text().splitlines()
    assert lines[0] == "item_id:token\tattributes:token_seq"
    rows = dict(line.split("\t") for line in lines[1:])
    assert rows == {"4": "1 2 3", "12": "3", "83": "4 5", "165": "7 8 9 10"}
    assert [line.split("\t")[0] for line in lines[1:]] == ["4", "12", "83", "165"]  # numeric order
    # the interactions' item tokens are the .item file's
    inter = (tmp_path / "data" / "beauty" / "beauty.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert {line.split("\t")[1] for line in inter[1:]} == set(rows)


def test_an_item_without_attributes_is_refused(peer, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"4": [1]}))
    with pytest.raises(ValueError, match="1 item"):
        peer.write_item_features(tmp_path / "a.json", tmp_path, "beauty", {"4", "83"})
    (tmp_path / "b.json").write_text(json.dumps({"4": ["a b"]}))
    with pytest.raises(ValueError, match="without spaces"):
        peer.write_item_features(tmp_path / "b.json", tmp_path, "beauty")


def test_beautys_attribute_file_covers_every_item(peer, tmp_path):
    data = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"
    if not data.exists():
        pytest.skip(f"{data} not here")
    seqs = peer.write_atomic(data, tmp_path, "beauty")
    items = {i for s in seqs.values() for i in s}
    assert peer.write_item_features(data.with_name("Beauty_item2attributes.json"), tmp_path, "beauty", items) == len(items)


def test_an_epoch_starts_only_within_budget_patience_and_deadline(peer):
    stop = peer.stop_reason
    assert stop(100.0, 2400.0, 0, 10, now=1000.0, last_epoch_wall=300.0, deadline=None) is None
    assert stop(2401.0, 2400.0, 0, 10, now=1000.0, last_epoch_wall=300.0, deadline=None) == "budget"
    assert stop(100.0, 2400.0, 10, 10, now=1000.0, last_epoch_wall=300.0, deadline=None) == "early stopping"
    # the next epoch, as long as the last, would end after the deadline: the best so far is tested instead
    assert stop(100.0, 2400.0, 0, 10, now=1000.0, last_epoch_wall=300.0, deadline=1200.0) == "deadline"
    assert stop(100.0, 2400.0, 0, 10, now=1000.0, last_epoch_wall=150.0, deadline=1200.0) is None
