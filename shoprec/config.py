"""The one way settings are read: a recipe is a mapping (from a YAML/JSON file or given as data), layers of
overrides merge over it, and a dataclass takes it only when every key is one of its fields."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


def read_mapping(source: str | Path | dict | None) -> dict:
    """A mapping of settings: ``source`` itself (copied), or a YAML (or JSON) file's; None or "" is {}."""
    if source is None or source == "":
        return {}
    if isinstance(source, dict):
        return json.loads(json.dumps(source))  # a copy the caller's dict does not share
    import yaml

    d = yaml.safe_load(Path(source).read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{source}: settings are a mapping of fields, not {type(d).__name__}")
    return d


def merge(*layers: dict | None) -> dict:
    """Later layers win; a mapping merges into a mapping one level deep; None values are dropped."""
    out: dict = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = {**out[k], **{kk: vv for kk, vv in v.items() if vv is not None}}
            elif isinstance(v, dict):
                out[k] = {kk: vv for kk, vv in v.items() if vv is not None}
            elif v is not None:
                out[k] = v
    return out


def check_fields(cls, d: dict) -> None:
    """Raise naming every key of ``d`` that is not a field of the dataclass ``cls``."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")


def drop_retired(cls, d: dict, retired: dict) -> dict:
    """``d`` without the settings that left ``cls`` (name -> the value meaning "off"), so that a config saved
    before they went still loads; one that was switched on is refused, since it can no longer be honoured."""
    out = dict(d)
    for name, off in retired.items():
        if name in out:
            value = out.pop(name)
            if value != off and not (isinstance(value, dict) and isinstance(off, dict)
                                     and all(value.get(k) == v for k, v in off.items())):
                raise ValueError(f"{cls.__name__}.{name} is no longer a setting of shoprec (it was {value!r})")
    return out
