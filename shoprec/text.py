"""Text normalisation shared by the search index and the server's BM25 (kept free of heavy imports)."""

from __future__ import annotations


def light_stem(words: list[str]) -> list[str]:
    """Strip English plural endings (drills -> drill, boxes -> box, batteries -> battery)."""
    out = []
    for w in words:
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes", "zes")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return out
