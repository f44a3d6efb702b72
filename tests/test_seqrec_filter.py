"""BSARec's frequency filter (model.filter_c) and BSARec's prefix examples (train_examples: prefixes).

- filter off is the model as it was, bit for bit (outputs recorded from the code before the option);
- the filter is BSARec's FrequencyLayer formula, lets no padding in, and keeps trimming exact;
- no target leaks into the state that predicts it: the filter's states see later positions, so such a model
  trains on the last position of each prefix only, and a sequence-trained filter model is refused;
- the config survives save/load, old saved configs load unchanged; both recipes train on the built-in shop.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from shoprec.seqrec.model import SeqRec, SeqRecConfig, left_pad, load_model, low_pass_matrix, save_model, trim
from shoprec.seqrec.train import TrainConfig, TrainPrefixes, TrainSequences, load_recipe, make_batch, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent

# SeqRec(SeqRecConfig(n_items=30, max_len=10, d_model=16, n_heads=2, n_layers=2, dropout=0.3, **kw)) after
# torch.manual_seed(0), on SEQS: the last position's first 4 channels, in eval mode and in train mode after
# torch.manual_seed(1), as the code before filter_c / ff_inner_dropout existed computed them (commit 0afde09).
SEQS = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11], [12]]
BEFORE = {
    "pre": ({}, [0.952305, 0.129108, 1.709434, -0.093094, -1.150474, 0.156861, -0.813456, 1.227339, -0.57506,
                 0.144103, -1.350473, 0.253497],
            [0.837099, 0.138805, 2.01894, -0.19956, -1.389545, 0.372666, 0.038749, 0.084321, -1.142965, -0.08069,
             0.276304, 0.317859]),
    "post": ({"norm_first": False, "emb_norm": True, "emb_scale": False},
             [0.98102, -0.491613, 1.19335, 1.094902, -0.859655, -0.001485, -0.91558, 1.575023, -0.404023, -0.036985,
              -1.567921, 1.103381],
             [1.017433, -0.51116, 1.264826, 1.136107, -0.995174, 0.106891, 0.110102, 0.104013, -0.699546, -0.204051,
              -0.116502, 1.358193]),
}
OLD_KEYS = {"blocks.{i}.ff1.bias", "blocks.{i}.ff1.weight", "blocks.{i}.ff2.bias", "blocks.{i}.ff2.weight",
            "blocks.{i}.norm1.bias", "blocks.{i}.norm1.weight", "blocks.{i}.norm2.bias", "blocks.{i}.norm2.weight",
            "blocks.{i}.out.bias", "blocks.{i}.out.weight", "blocks.{i}.qkv.bias", "blocks.{i}.qkv.weight"}


def small(**kw) -> SeqRec:
    torch.manual_seed(0)
    return SeqRec(SeqRecConfig(**{"n_items": 30, "max_len": 10, "d_model": 16, "n_heads": 2, "n_layers": 2,
                                  "dropout": 0.3, **kw}))


def last_states(m: SeqRec, seq: torch.Tensor) -> tuple[list[float], list[float]]:
    m.eval()
    with torch.no_grad():
        h = m(seq)
    m.train()
    torch.manual_seed(1)
    with torch.no_grad():
        ht = m(seq)
    return h[:, -1, :4].flatten().tolist(), ht[:, -1, :4].flatten().tolist()


@pytest.mark.parametrize("layout", ["pre", "post"])
def test_filter_off_is_the_model_before_the_option(layout):
    kw, want_eval, want_train = BEFORE[layout]
    seq = left_pad(SEQS, 10)
    m = small(**kw)
    got_eval, got_train = last_states(m, seq)
    assert got_eval == pytest.approx(want_eval, abs=2e-6) and got_train == pytest.approx(want_train, abs=2e-6)
    blocks = {k for k in m.state_dict() if k.startswith("blocks.")}
    assert blocks == {k.format(i=i) for k in OLD_KEYS for i in (0, 1)}
    # a config saved before the options existed builds the same model, weight for weight
    old = {k: v for k, v in asdict(m.cfg).items() if k not in ("filter_c", "filter_alpha", "ff_inner_dropout")}
    torch.manual_seed(0)
    again = SeqRec(SeqRecConfig.from_dict(old))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("layout", ["pre", "post"])
def test_filter_on_changes_outputs_and_adds_its_weights(layout):
    kw = BEFORE[layout][0]
    seq = left_pad(SEQS, 10)
    off, on = small(**kw), small(**kw, filter_c=5)
    assert not torch.allclose(torch.tensor(last_states(off, seq)[0]), torch.tensor(last_states(on, seq)[0]))
    extra = set(on.state_dict()) - set(off.state_dict())
    want = {"blocks.0.filter.sqrt_beta", "blocks.1.filter.sqrt_beta"}
    if layout == "post":  # BSARec's filter has its own LayerNorm in a post-LN layer
        want |= {f"blocks.{i}.norm_filter.{p}" for i in (0, 1) for p in ("weight", "bias")}
    assert extra == want
    # ff_inner_dropout only matters in training
    a, b = small(**kw, ff_inner_dropout=False), small(**kw)
    assert last_states(a, seq)[0] == pytest.approx(last_states(b, seq)[0], abs=1e-6)
    assert last_states(a, seq)[1] != pytest.approx(last_states(b, seq)[1], abs=1e-4)


def bsarec_low_pass(x: torch.Tensor, c: int) -> torch.Tensor:
    """BSARec's FrequencyLayer low pass, written as in src/model/bsarec.py (rfft, zero from c // 2 + 1, irfft)."""
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    spectrum[:, c // 2 + 1:, :] = 0
    return torch.fft.irfft(spectrum, n=x.shape[1], dim=1, norm="ortho")


@pytest.mark.parametrize("c", [1, 3, 5, 9])
def test_filter_is_bsarecs_formula_over_max_len_positions(c):
    torch.manual_seed(0)
    x = torch.randn(3, 12, 16)
    torch.testing.assert_close(torch.matmul(low_pass_matrix(12, c), x), bsarec_low_pass(x, c), atol=1e-5, rtol=1e-5)
    m = small(max_len=12, filter_c=c)
    f = m.blocks[0].filter
    real = torch.ones(3, 12, 1, dtype=torch.bool)
    low = bsarec_low_pass(x, c)
    torch.testing.assert_close(f(x, real), low + f.sqrt_beta ** 2 * (x - low), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["pre", "post"])
def test_filter_lets_no_padding_in_and_trimming_stays_exact(layout):
    m = small(**BEFORE[layout][0], filter_c=5).eval()
    full = left_pad(SEQS, 10)
    (short,) = trim(full)
    assert short.shape[1] == 7
    with torch.no_grad():
        h_full, h_short, alone = m(full), m(short), m(left_pad([SEQS[0]], 10))
        torch.testing.assert_close(h_full[:, -7:], h_short, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h_full[0, -4:], alone[0, -4:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.next_item_scores(full), m.next_item_scores(short))
        # what sits at padding positions inside a layer does not reach a real one
        f = m.blocks[0].filter
        x = torch.randn(3, 10, 16)
        real = (full != 0).unsqueeze(-1)
        noisy = torch.where(real, x, torch.randn_like(x) * 100)
        torch.testing.assert_close(f(x, real) * real, f(noisy, real) * real)


def states_see_later_positions(m: SeqRec, inputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether some trained position's state (target not PAD) changes when the items after it change: the item
    it must predict sits there in a sequence-trained batch."""
    m.eval()
    with torch.no_grad():
        h = m(inputs)
        for b, t in (targets != 0).nonzero().tolist():
            if t + 1 >= inputs.shape[1]:
                continue
            changed = inputs.clone()
            changed[b, t + 1:] = (changed[b, t + 1:] % m.cfg.n_items) + 1
            if not torch.allclose(m(changed)[b, t], h[b, t], atol=1e-6):
                return True
    return False


def test_no_target_leaks_into_the_state_that_predicts_it():
    seqs = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20, 21]]
    gen = torch.Generator().manual_seed(0)
    sasrec, filtered = small(), small(filter_c=5)
    cfg = sasrec.cfg
    # SASRec, one example per shopper: every position trains, and none sees what follows it
    inputs, targets = trim(*make_batch(TrainSequences(seqs, cfg.max_len).seqs, cfg, gen))
    assert (targets != 0).sum() > len(seqs)
    assert not states_see_later_positions(sasrec, inputs, targets)
    # the filter mixes later positions in: trained that way its states would see their targets ...
    assert states_see_later_positions(filtered, inputs, targets)
    with pytest.raises(ValueError, match="prefixes"):
        TrainConfig(model=SeqRecConfig(filter_c=5))
    # ... so it trains on prefixes, the last position only, whose input holds the history and nothing after it
    prefixes = TrainPrefixes(seqs, cfg.max_len).seqs
    inputs, targets = trim(*make_batch(prefixes, filtered.cfg, gen, last_only=True))
    assert (targets[:, :-1] == 0).all() and targets[:, -1].tolist() == [p[-1] for p in prefixes]
    for row, p in zip(inputs.tolist(), prefixes):
        assert [i for i in row if i] == p[:-1]
    assert not states_see_later_positions(filtered, inputs, targets)
    assert TrainConfig(train_examples="prefixes", model=SeqRecConfig(filter_c=5)).model.filter_c == 5


def test_prefixes_are_bsarecs_training_examples():
    # BSARec's RecDataset: input_ids = seq[-(max_len + 2):-2]; every input_ids[:i + 1] is an example
    seqs = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    assert TrainPrefixes(seqs, 3).seqs == [[3], [3, 4], [3, 4, 5], [10]]
    assert TrainPrefixes(seqs, 50).seqs == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5], [10]]
    inputs, targets = make_batch([[10], [3, 4, 5]], SeqRecConfig(n_items=12, max_len=4), torch.Generator(),
                                 last_only=True)
    assert inputs.tolist() == [[0, 0, 0, 0], [0, 0, 3, 4]] and targets.tolist() == [[0, 0, 0, 10], [0, 0, 0, 5]]
    with pytest.raises(ValueError, match="sasrec"):
        TrainConfig(train_examples="prefixes", model=SeqRecConfig(objective="bert4rec"))
    with pytest.raises(ValueError, match="train_examples"):
        TrainConfig(train_examples="windows")


def test_filter_config_round_trips_through_save_and_load(tmp_path):
    m = small(filter_c=3, filter_alpha=0.4, ff_inner_dropout=False, norm_first=False).eval()
    save_model(m, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["model"]
    assert (saved["filter_c"], saved["filter_alpha"], saved["ff_inner_dropout"]) == (3, 0.4, False)
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg == m.cfg
    seq = left_pad(SEQS, 10)
    torch.testing.assert_close(loaded.next_item_scores(seq), m.next_item_scores(seq))
    # a model saved before the options existed loads with the filter off
    save_model(small(), tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["model"] = {k: v for k, v in cfg["model"].items() if k not in ("filter_c", "filter_alpha", "ff_inner_dropout")}
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old_model = load_model(tmp_path / "old")
    assert old_model.cfg.filter_c == 0 and old_model.cfg.ff_inner_dropout and old_model.blocks[0].filter is None
    with pytest.raises(ValueError, match="filter_alpha"):
        SeqRecConfig(filter_c=5, filter_alpha=1.5)


@pytest.mark.parametrize("recipe", ["bsarec.yaml", "medium-bsarec.yaml"])
def test_recipes_train_an_epoch_on_the_built_in_shop(recipe, tiny_features, tmp_path):
    cfg = load_recipe(REPO / "configs" / "seqrec" / recipe, epochs=1, threads=1, batch_size=64)
    assert cfg.train_examples == "prefixes" and cfg.model.filter_c == 5 and cfg.model.filter_alpha == 0.7
    summary = train(tiny_features, tmp_path / "m", cfg, progress=False)
    assert summary["epochs_run"] == 1 and summary["n_train_examples"] > 300
    assert summary["valid"]["count"] > 0 and summary["test"]["ndcg@10"] == summary["test"]["ndcg@10"]
    assert load_model(tmp_path / "m").cfg.filter_c == 5


def test_wall_clock_budget_starts_no_epoch_that_would_end_past_it(tiny_features, tmp_path):
    cfg = TrainConfig.from_dict({"epochs": 5, "batch_size": 64, "threads": 1, "patience": 50,
                                 "max_elapsed_minutes": 1e-6, "model": {"d_model": 16, "n_layers": 1, "max_len": 20}})
    summary = train(tiny_features, tmp_path / "m", cfg, progress=False)
    assert summary["epochs_run"] == 1 and summary["stopped_by"] == "max_elapsed_minutes"
    # resumed from its checkpoint (the next machine), a run gets the budget afresh: one more epoch here
    again = train(tiny_features, tmp_path / "m", cfg, progress=False)
    assert again["epochs_run"] == 2 and again["history"][0] == summary["history"][0]
    assert again["stopped_by"] == "max_elapsed_minutes"
    cfg.max_elapsed_minutes = 0.0
    cfg.epochs = 2
    assert train(tiny_features, tmp_path / "n", cfg, progress=False)["stopped_by"] == "epochs"
