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
           "Ingest": ("ingest.json",), "Serving": ("serve.json",), "Warm start": ("warm-start.json",),
           "Batch recommendations": ("batch-recs.json",)}
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


# ------------------------------------------------------------------ the issue's two paragraphs, figure by figure
HD, GAMES = "ranker-homedepot.json", "ranker-games.json"
ENSEMBLES = ("exploratory", "cross-encoder ensembles")
S3, S4 = "lr 2e-3, 2,000 training shoppers (session 3)", "lr 2e-3, 4,000 training shoppers (session 4)"
S47 = ("lr 5e-4, 4,000 training shoppers, medium.yaml before session 6 (d 64, dot product), 20-minute seqrec cap "
       "(sessions 4-7)")
S8 = "lr 5e-4, 4,000 training shoppers, medium.yaml, 40-minute seqrec cap, 3,000 test users (session 8)"
S910 = "lr 5e-4, 4,000 training shoppers, medium.yaml, 40-minute seqrec cap, 8,000 test users (sessions 9-10)"
BLEND = "seqrec+cross-encoder (blend)"


def single(model: str, key: str) -> tuple:
    """A single-model row of ranker_ensemble.py's combinations."""
    return ENSEMBLES + ("combinations", {"models": [model]}, key)


# (figure as the README writes it, result file, key path); a dict in a path picks the list item it matches
MAPPED = {
    "Ranker on HomeDepot": [
        ("0.74%", HD, ("training", "lora-cross", "trainable_percent")),
        ("0.598x", HD, ("training", "step_time_side_by_side", "lora/full")),
        ("54,667", HD, ("data", "products")),
        ("0.0001", "bm25-grid-homedepot.json", ("summary", "best_minus_default")),
        ("0.380", HD, ("retrieve", "bm25", "ndcg@10")), ("0.728", HD, ("retrieve", "bm25", "recall@100")),
        ("40,542", HD, ("training", "lora-bi", "config", "pairs")),
        ("0.368", HD, ("retrieve", "lora-bi", "ndcg@10")), ("0.751", HD, ("retrieve", "lora-bi", "recall@100")),
        ("0.426", HD, ("retrieve", "fusion", "ndcg@10")), ("0.801", HD, ("retrieve", "fusion", "recall@100")),
        ("0.25", HD, ("search_settings", "rerank_weight")),
        ("0.425", HD, ("retrieve", "search-path", "ndcg@10")), ("0.424", HD, ("retrieve", "search-path-int8", "ndcg@10")),
        ("12,000", HD, ("training", "full-bi", "config", "pairs")),
        ("0.008", HD, ("targets", "lora within 0.01 retrieve ndcg@10 of full (same 12k pairs)", "value")),
        ("0.359", HD, ("retrieve", "lora-bi-12k", "ndcg@10")), ("0.367", HD, ("retrieve", "full-bi", "ndcg@10")),
        ("1,004", HD, ("rerank", "lora-cross", "queries")), ("0.909", HD, ("rerank", "constant", "ndcg@10")),
        ("59,452", HD, ("training", "data", "cross_train_judged_pairs")),
        ("0.929", HD, ("rerank", "lora-cross", "ndcg@10")), ("0.462", HD, ("rerank", "lora-cross", "rmse")),
        ("0.928", HD, ("valid", "rerank", "lora-cross", "ndcg@10")),
        ("0.923", HD, ("rerank", "bm25", "ndcg@10")), ("0.510", HD, ("rerank", "bm25", "rmse")),
        ("0.927", HD, ("rerank", "zero-shot", "ndcg@10")), ("0.489", HD, ("rerank", "zero-shot", "rmse")),
        ("0.928", HD, ("rerank", "lora-bi", "ndcg@10")), ("0.479", HD, ("rerank", "lora-bi", "rmse")),
        ("0.930", HD, ("rerank", "bm25+lora-bi+lora-cross", "ndcg@10")),
        ("0.461", HD, ("rerank", "bm25+lora-bi+lora-cross", "rmse")),
        ("0.925", HD, single("rk-hd6/lora-cross", "test_ndcg@10")), ("0.480", HD, single("rk-hd6/lora-cross", "test_rmse")),
        ("0.925", HD, single("rk-hd7/lora-cross", "test_ndcg@10")), ("0.480", HD, single("rk-hd7/lora-cross", "test_rmse")),
        ("0.921", HD, single("rk-hd7/lora-cross", "valid_ndcg@10")),
        ("0.920", HD, single("rk-hd3/lora-cross", "test_ndcg@10")), ("0.500", HD, single("rk-hd3/lora-cross", "test_rmse")),
        ("0.9277", HD, ENSEMBLES + ("best_on_valid", "valid_ndcg@10")),
        ("0.9276", HD, ENSEMBLES + ("combinations", {"models": ["rk-hd8/lora-cross", "rk-hd6/lora-cross"]},
                                 "test_ndcg@10")),
        ("0.924", HD, single("rk-hd6/full-cross", "test_ndcg@10")),
        ("-0.0032", HD, ("lora_vs_full_same_data", "earlier", 0, "diff")),
        ("-0.0065", HD, ("lora_vs_full_same_data", "earlier", 0, "ci95", 0)),
        ("+0.0004", HD, ("lora_vs_full_same_data", "earlier", 0, "ci95", 1)),
        ("0.483", HD, ("rerank", "full-cross", "rmse")),
        ("4,718", HD, ("training", "lora-cross", "optimizer_steps")),
        ("0.93", HD, ("training", "step_time_side_by_side", "full")),
        ("3.8x", HD, ("export", "int8_speedup_vs_merged")),
        ("0.926", HD, ("rerank", "int8-cross", "ndcg@10")), ("0.466", HD, ("rerank", "int8-cross", "rmse")),
        ("-0.3%", HD, ("export", "int8_ndcg_change_rel")),
    ],
    "Click re-ranking on Amazon Games": [
        ("50,546", GAMES, ("dataset", "users")), ("16,859", GAMES, ("dataset", "items")),
        ("0.0625", GAMES, ("rerank", "seqrec", "ndcg@10")), ("0.112", GAMES, ("rerank", "seqrec", "hr@10")),
        ("8,000", GAMES, ("sampling", "test_users")), ("0.0066", GAMES, ("rerank", "popularity", "ndcg@10")),
        ("0.6", GAMES, ("rerank", BLEND, "seqrec_weight")),
        ("8,000", GAMES, ("sampling", "cross_encoder_train_users")), ("2,000", GAMES, ("sampling", "valid_users")),
        ("0.0671", GAMES, ("rerank", BLEND, "ndcg@10")), ("0.118", GAMES, ("rerank", BLEND, "hr@10")),
        ("+7.4%", GAMES, ("target", "relative_gain")),
        ("+3.9%", GAMES, ("target", "relative_gain_ci95", 0)), ("+11.0%", GAMES, ("target", "relative_gain_ci95", 1)),
        ("0.0483", GAMES, ("rerank", "cross-encoder (re-rank top-50)", "ndcg@10")),
        ("3,000", GAMES, ("test_sample_history", "stretches", 0, "test_users", 1)),
        ("+5.3%", GAMES, ("earlier_runs", S3, "target", "relative_gain")),
        ("+1.4%", GAMES, ("earlier_runs", S3, "target", "relative_gain_ci95", 0)),
        ("+9.4%", GAMES, ("earlier_runs", S3, "target", "relative_gain_ci95", 1)),
        ("4,000", GAMES, ("earlier_runs", S910, "sampling", "cross_encoder_train_users")),
        ("+0.1%", GAMES, ("earlier_runs", S4, "target", "relative_gain")),
        ("-1.1%", GAMES, ("earlier_runs", S4, "target", "relative_gain_ci95", 0)),
        ("+1.2%", GAMES, ("earlier_runs", S4, "target", "relative_gain_ci95", 1)),
        ("0.0569", GAMES, ("earlier_runs", S47, "rerank", "seqrec", "ndcg@10")),
        ("+9.8%", GAMES, ("earlier_runs", S47, "target", "relative_gain")),
        ("+2.4%", GAMES, ("earlier_runs", S47, "target", "relative_gain_ci95", 0)),
        ("+17.7%", GAMES, ("earlier_runs", S47, "target", "relative_gain_ci95", 1)),
        ("+4.4%", GAMES, ("earlier_runs", S8, "target", "relative_gain")),
        ("-2.3%", GAMES, ("earlier_runs", S8, "target", "relative_gain_ci95", 0)),
        ("+11.6%", GAMES, ("earlier_runs", S8, "target", "relative_gain_ci95", 1)),
        ("+4.7%", GAMES, ("earlier_runs", S910, "target", "relative_gain")),
        ("+1.6%", GAMES, ("earlier_runs", S910, "target", "relative_gain_ci95", 0)),
        ("+8.1%", GAMES, ("earlier_runs", S910, "target", "relative_gain_ci95", 1)),
        ("+5.3%", GAMES, ("earlier_runs", S910, "by_sample_part", "earlier test users", "blend - seqrec", "relative")),
        ("+4.4%", GAMES, ("earlier_runs", S910, "by_sample_part", "new test users", "blend - seqrec", "relative")),
        ("5,000", GAMES, ("earlier_runs", S910, "by_sample_part", "new test users", "users")),
        ("2.5%", GAMES, ("vs_replaced", "this - replaced", "relative")),
        ("+0.5%", GAMES, ("vs_replaced", "this - replaced", "relative_ci95", 0)),
        ("+4.6%", GAMES, ("vs_replaced", "this - replaced", "relative_ci95", 1)),
        ("0.615", GAMES, ("auc_valid", "cross-encoder", "cross-encoder", "auc_per_user_mean")),
        ("0.620", GAMES, ("earlier_runs", S910, "auc_valid", "cross-encoder", "cross-encoder", "auc_per_user_mean")),
        ("+7.9%", GAMES, ("valid", "blend_relative_gain_ndcg@10")),
    ],
    "Ranker pseudo-labelling": [
        ("10%", "ranker-pseudolabel.json", ("settings", "soft", "positive_fraction")),
        ("40%", "ranker-pseudolabel.json", ("settings", "soft", "negative_fraction")),
        ("0.607", "ranker-pseudolabel.json", ("mean", "soft", "teacher", "search_ndcg@10")),
        ("0.673", "ranker-pseudolabel.json", ("mean", "soft", "student", "search_ndcg@10")),
        ("0.752", "ranker-pseudolabel.json", ("mean", "soft", "control", "search_ndcg@10")),
    ],
    "Search by re-rank depth": [
        ("1,098", "search-homedepot.json", ("data", "test_queries_with_relevant")),
        ("0.424", HD, ("retrieve", "search-path-int8", "ndcg@10")),
    ] + [(fig, "search-homedepot.json", ("table", {"cross_encoder": ce, "rerank_depth": depth}, key))
         for ce, depth, figs in (("int8", 0, ("0.426", "0.801", "9.6", "13.9")), ("int8", 10, ("0.426", "0.801", "24.7", "29.6")),
                                 ("int8", 20, ("0.423", "0.801", "38.9", "44.3")), ("int8", 50, ("0.426", "0.801", "83.8", "91.7")),
                                 ("fp32", 20, ("0.427", "0.801", "150.0", "159.4")),
                                 ("int8-len24", 20, ("0.424", "0.801", "33.4", "38.0")))
         for fig, key in zip(figs, ("ndcg@10", "recall@100", "p50_ms", "p99_ms"))],
    "Reliability": [
        ("9,131", "reliability.json", ("tests", "ingest_fuzz_large", "faults_injected")),
        ("9,683", "reliability.json", ("summary", "faults_injected")),
    ],
}
# in a result file, but only inside a note a script wrote (ranker_games.py's notes of the sessions 9-10 run)
IN_NOTES = {"Click re-ranking on Amazon Games": [("+6.8%", GAMES, ("earlier_runs", S910, "notes", 0))]}


def at(node, path):
    for step in path:
        if isinstance(step, dict):
            node = next(item for item in node if all(item.get(k) == v for k, v in step.items()))
        else:
            node = node[step]
    return node


@pytest.mark.parametrize("title", MAPPED)
def test_each_figure_of_the_issue_paragraphs_is_its_key(readme_paragraphs, title):
    text = re.sub(r"`[^`]*`", " ", readme_paragraphs[title])
    cache = {}
    for fig, name, path in MAPPED[title]:
        res = cache.setdefault(name, json.loads((RESULTS / name).read_text()))
        assert fig in figures(text), (fig, "not in the paragraph")
        assert traceable(fig, [float(at(res, path))]), (fig, path, at(res, path))
    for fig, name, path in IN_NOTES.get(title, []):
        assert fig in figures(text) and fig in at(json.loads((RESULTS / name).read_text()), path)


@pytest.mark.parametrize("title", MAPPED)
def test_every_decimal_figure_of_the_issue_paragraphs_is_mapped(readme_paragraphs, title):
    mapped = {f for f, *_ in MAPPED[title] + IN_NOTES.get(title, [])}
    # settings (BM25 k1 0.4 / b 0.5, blend weights 0.25 / 0.75 and 0.6 / 0.4) and the issue's targets
    # (0.6x, 0.475, 0.935, 0.005, 5%), which are in the targets' keys
    free = {"0.6", "0.4", "0.5", "0.25", "0.75", "0.475", "0.935", "0.005", "5%"}
    assert [f for f in figures(readme_paragraphs[title]) if f not in mapped | free | ALLOWED] == []
