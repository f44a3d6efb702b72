"""Start a night's sequential model from the champion's weights instead of from random ones.

The catalogue changes between nights, so the item embedding cannot be copied as a block: each item the
champion knew keeps its row (matched by ``item_id``, not by index, which shifts as items come and go), a new
item keeps its fresh random row, and an item that left the catalogue is dropped. Attribute vectors are
matched by attribute token the same way. Every other tensor (transformer blocks, positions, norms) is copied
when its shape matches. A champion of another architecture (width, depth, heads, objective, ...) cannot be
warm-started from: :class:`WarmStartRefused` names the differing fields, and the caller trains from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

# Fields that must agree for the champion's tensors to mean the same thing in the new model.
ARCHITECTURE = ("d_model", "n_heads", "n_layers", "ff_mult", "max_len", "objective", "norm_first", "emb_norm",
                "item_attributes")


class WarmStartRefused(ValueError):
    """The champion's model cannot initialise this one (another architecture, or no model files)."""


def _attribute_vocab(items: pd.DataFrame) -> list[str]:
    # the order shoprec.seqrec.train.item_attribute_table gives attribute ids: token k is vocab[k - 1]
    return sorted({t for tokens in items["attributes"] for t in tokens}) if "attributes" in items else []


def _rows_by_key(new_rows: dict[str, int], old_rows: dict[str, int]) -> tuple[list[int], list[int]]:
    """(new row, old row) lists for the keys both sides hold."""
    both = [k for k in new_rows if k in old_rows]
    return [new_rows[k] for k in both], [old_rows[k] for k in both]


def _vocab_rows(vocab: list[str]) -> dict[str, int]:
    return {t: k for k, t in enumerate(vocab, start=1)}  # row 0 is padding


def warm_start(model: torch.nn.Module, items: pd.DataFrame, champion_dir: str | Path) -> dict:
    """Copy the champion's weights in ``champion_dir`` into ``model`` (a fresh SeqRec over ``items``, the new
    features' items.parquet with ``idx`` 1..n); returns what was kept, added and dropped."""
    from safetensors.torch import load_file

    champion_dir = Path(champion_dir)
    missing = [f for f in ("config.json", "model.safetensors", "items.parquet") if not (champion_dir / f).exists()]
    if missing:
        raise WarmStartRefused(f"{champion_dir} has no {', '.join(missing)}: not a single sequential model")
    old_cfg = json.loads((champion_dir / "config.json").read_text())["model"]
    new_cfg = model.cfg.to_dict()
    differ = {k: (old_cfg.get(k), new_cfg.get(k)) for k in ARCHITECTURE if old_cfg.get(k) != new_cfg.get(k)}
    if differ:
        raise WarmStartRefused("the champion has another architecture: " + ", ".join(
            f"{k} {old} -> {new}" for k, (old, new) in differ.items()))
    old_items, new_items = pd.read_parquet(champion_dir / "items.parquet"), items
    old_state, state = load_file(str(champion_dir / "model.safetensors")), model.state_dict()
    new_rows, old_rows = _rows_by_key(dict(zip(new_items["item_id"], new_items["idx"].astype(int))),
                                      dict(zip(old_items["item_id"], old_items["idx"].astype(int))))
    report = {"champion": str(champion_dir), "items_kept": len(new_rows),
              "items_new": len(new_items) - len(new_rows), "items_dropped": len(old_items) - len(new_rows),
              "tensors_copied": [], "tensors_fresh": []}
    with torch.no_grad():
        for name, value in state.items():
            old = old_state.get(name)
            if name == "item_attrs" or old is None:  # the attribute table is rebuilt from the new items
                report["tensors_fresh"].append(name)
            elif name == "item_emb.weight":
                value[new_rows] = old[old_rows].to(value.dtype)
                value[-1] = old[-1]  # the [MASK] item
                report["tensors_copied"].append(name)
            elif name == "attr_emb.weight":
                rows, prev = _rows_by_key(_vocab_rows(_attribute_vocab(new_items)),
                                          _vocab_rows(_attribute_vocab(old_items)))
                value[rows] = old[prev].to(value.dtype)
                report["attributes_kept"] = len(rows)
                report["tensors_copied"].append(name)
            elif old.shape == value.shape:
                value.copy_(old)
                report["tensors_copied"].append(name)
            else:
                report["tensors_fresh"].append(name)
    model.load_state_dict(state)
    return report
