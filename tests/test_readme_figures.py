"""Every figure the README's benchmark paragraphs state is in some benchmarks/results/*.json (issue #24 item 3).

A figure is a number with a decimal point, a percentage, a ratio ("3.8x") or a number with thousands separators
("54,667"); plain small integers (epochs, seeds, session numbers, token lengths) are settings, not figures, and are
not checked. Text in backticks (commands, file and option names) is skipped. A figure matches a JSON number (a value
or a number in a key, such as a target's threshold) that rounds to it at the figure's precision, as a fraction or
as a percentage, sign ignored ("0.008 below" is a difference of -0.008). ALLOWED lists the few figures that are
not benchmark results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# the paragraphs checked, by their bold title, and the result files each may cite (the seqrec/RecBole paragraph
# belongs to benchmarks/seqrec*.py's owner)
CHECKED = {"Ranker on HomeDepot": ("ranker-homedepot.json", "bm25-grid-homedepot.json"),
           "Click re-ranking on Amazon Games": ("ranker-games.json",),
           "Ranker pseudo-labelling": ("ranker-pseudolabel.json",),
           "Search by re-rank depth": ("search-homedepot.json", "ranker-homedepot.json"),
           "Reliability": ("reliability.json",),
           "Ingest": ("ingest.json",), "Serving": ("serve.json",), "Warm start": ("warm-start.json",)}
ALLOWED = {"95%"}  # the confidence level of every interval
FIGURE = re.compile(r"(?<![\w.])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:%|x\b)?")
NUMBER_IN_KEY = re.compile(r"\d+(?:\.\d+)?")


def benchmark_section(text: str) -> str:
    start = text.index("## Benchmarks")
    return text[start:text.index("\n## ", start + 1)]


def paragraphs(section: str) -> dict[str, str]:
    """Top-level bullets ('- **Title** ...' up to the next one) by title."""
    out = {}
    for block in re.split(r"\n(?=- \*\*)", section):
        m = re.match(r"- \*\*(.+?)\*\*", block)
        if m:
            out[m.group(1)] = block
    return out


def figures(text: str) -> list[str]:
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?% CI\b", "CI", text)
    out = []
    for tok in FIGURE.findall(text):
        body = tok.lstrip("+-")
        if "." in body or "," in body or body.endswith("%") or body.endswith("x"):
            out.append(tok)
    return out


def json_numbers(names=None) -> list[float]:
    """Every number in the named result files (default: all of them)."""
    nums: list[float] = []

    def walk(node):
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            nums.append(float(node))
        elif isinstance(node, dict):
            for k, v in node.items():
                nums.extend(float(x) for x in NUMBER_IN_KEY.findall(str(k)))
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for f in sorted(RESULTS.glob("*.json")) if names is None else [RESULTS / n for n in names]:
        walk(json.loads(f.read_text()))
    return nums


def traceable(fig: str, nums: list[float]) -> bool:
    body = fig.lstrip("+-").rstrip("%x").replace(",", "")
    value = float(body)
    decimals = len(body.split(".")[1]) if "." in body else 0
    tol = 0.5 * 10 ** -decimals + 1e-9
    scales = (1.0, 100.0)
    return any(abs(abs(x) * s - value) <= tol for x in nums for s in scales)


def missing(paragraph: str, nums: list[float]) -> list[str]:
    return [f for f in figures(paragraph) if f not in ALLOWED and not traceable(f, nums)]


@pytest.fixture(scope="module")
def readme_paragraphs():
    return paragraphs(benchmark_section((REPO / "README.md").read_text()))


def test_the_checked_paragraphs_exist(readme_paragraphs):
    assert set(CHECKED) <= set(readme_paragraphs), sorted(readme_paragraphs)


@pytest.mark.parametrize("title", CHECKED)
def test_every_figure_is_in_its_result_files(readme_paragraphs, title):
    assert missing(readme_paragraphs[title], json_numbers(CHECKED[title])) == []


def test_the_checker_finds_a_figure_no_file_holds():
    nums = json_numbers(["ranker-games.json"])
    assert missing("- **X** reaches 0.123456 and 77.77% (`--flag 0.999`), 95% CI", nums) == ["0.123456", "77.77%"]
    assert figures("54,667 products, 3.8x faster, 2 epochs, +7.4%") == ["54,667", "3.8x", "+7.4%"]
