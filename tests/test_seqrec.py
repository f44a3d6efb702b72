"""The sequence model: masking, padding/trim invariance, losses, save/load."""

from __future__ import annotations

import pytest
import torch

from shoprec.seqrec.model import SeqRec, SeqRecConfig, left_pad, load_model, save_model, trim

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model(**kw) -> SeqRec:
    torch.manual_seed(0)
    cfg = SeqRecConfig(**{"n_items": 40, "max_len": 12, "d_model": 16, "n_heads": 2, "n_layers": 2,
                          "dropout": 0.0, **kw})
    return SeqRec(cfg).eval()


@pytest.mark.parametrize("objective", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("norm_first,emb_norm", [(True, False), (False, True)])
def test_padding_and_trim_do_not_change_states(objective, norm_first, emb_norm):
    m = model(objective=objective, norm_first=norm_first, emb_norm=emb_norm)
    seqs = [[3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9], [7]]
    full = left_pad(seqs, 12)
    (short,) = trim(full)
    assert short.shape[1] == 9
    with torch.no_grad():
        h_full, h_short = m(full), m(short)
        alone = m(left_pad([seqs[0]], 12))
    torch.testing.assert_close(h_full[:, -9:], h_short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_full[0, -3:], alone[0, -3:], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(h_full).all()
    torch.testing.assert_close(m.next_item_scores(full), m.next_item_scores(short))


def test_sasrec_is_causal_and_bert4rec_is_not():
    seq = left_pad([[1, 2, 3, 4, 5]], 12)
    changed = seq.clone()
    changed[0, -1] = 9
    for objective, same in (("sasrec", True), ("bert4rec", False)):
        m = model(objective=objective)
        with torch.no_grad():
            a, b = m(seq)[0, -2], m(changed)[0, -2]
        assert torch.allclose(a, b, atol=1e-6) is same


@pytest.mark.parametrize("objective", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "gbce"])
def test_losses_are_finite_and_train(objective, loss):
    m = model(objective=objective, loss=loss, n_negatives=16).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    seq = left_pad([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]] * 4, 12)
    targets = torch.zeros_like(seq)
    targets[:, :-1] = seq[:, 1:]
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        value = m.loss(m(seq), targets, generator=g)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    assert all(map(lambda v: v == v and abs(v) < 1e4, losses))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_gbce_with_t0_is_plain_bce():
    m = model(loss="gbce", gbce_t=0.0, n_negatives=8)
    h = torch.randn(1, 3, 16)
    y = torch.tensor([[0, 5, 6]])
    g = torch.Generator().manual_seed(1)
    got = m.loss(h, y, generator=torch.Generator().manual_seed(1))
    negs = torch.randint(1, 41, (8,), generator=g)
    w = m.item_weights()
    hh = h[0, 1:]
    pos = (hh * w[y[0, 1:]]).sum(-1)
    neg = hh @ w[negs].T
    neg = neg.masked_fill(negs.unsqueeze(0) == y[0, 1:].unsqueeze(1), float("-inf"))
    want = (torch.nn.functional.softplus(-pos) + torch.nn.functional.softplus(neg).sum(-1)).mean()
    torch.testing.assert_close(got, want)


def test_padding_and_mask_items_are_never_recommended():
    m = model(objective="bert4rec")
    scores = m.next_item_scores(left_pad([[1, 2, 3]], 12))
    assert scores.shape == (1, 41)  # padding + 40 items, no [MASK] column
    assert scores[0, 0] == float("-inf")


@pytest.mark.parametrize("extra", [{}, {"score_temperature": 0.1}])
def test_save_and_load_round_trip(tmp_path, extra):
    m = model(emb_norm=True, norm_first=False, **extra)
    save_model(m, tmp_path / "m")
    back = load_model(tmp_path / "m")
    seq = left_pad([[1, 2, 3], [4, 5]], 12)
    torch.testing.assert_close(m.next_item_scores(seq), back.next_item_scores(seq))
    assert back.cfg == m.cfg


def test_config_rejects_unknown_values():
    with pytest.raises(ValueError):
        SeqRecConfig(objective="gru4rec")
    with pytest.raises(ValueError):
        SeqRecConfig.from_dict({"n_items": 3, "bogus": 1})


def test_batch_without_targets_gives_zero_loss_not_nan():
    m = model(loss="sampled_softmax", n_negatives=8).train()
    seq = left_pad([[3], [4]], 12)
    value = m.loss(m(seq), torch.zeros_like(seq))
    value.backward()
    assert value.item() == 0.0 and all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())


def test_score_temperature_gives_cosine_over_temperature_and_ignores_norms():
    m = model(score_temperature=0.1)
    h = torch.randn(2, 16)
    s = m.scores(h)
    w = m.item_weights()
    want = torch.nn.functional.cosine_similarity(h[:, None, :], w[None, 1:, :], dim=-1) / 0.1
    torch.testing.assert_close(s[:, 1:], want)
    assert (s[:, 1:].abs() <= 10 + 1e-4).all() and (s[:, 0] == float("-inf")).all()
    torch.testing.assert_close(m.scores(3.0 * h), s)  # the hidden state's norm does not change a score
    y = torch.tensor([[0, 5, 6]])
    hs = torch.randn(1, 3, 16)
    for loss in ("ce", "sampled_softmax", "gbce"):
        m.cfg.loss = loss
        assert torch.isfinite(m.loss(hs, y, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError):
        SeqRecConfig(score_temperature=-1.0)


def attribute_model(**kw) -> SeqRec:
    # items 1 and 2 share attribute 1; item 3 has attributes 1 and 2; the other items have none
    table = torch.zeros(42, 2, dtype=torch.long)
    table[1, 0] = table[2, 0] = table[3, 0] = 1
    table[3, 1] = 2
    torch.manual_seed(0)
    cfg = SeqRecConfig(n_items=40, max_len=12, d_model=16, n_heads=2, n_layers=1, dropout=0.0,
                       item_attributes=True, n_attributes=2, max_item_attributes=2, **kw)
    return SeqRec(cfg, table).eval()


def test_item_attributes_add_the_mean_attribute_vector_to_inputs_and_outputs(tmp_path):
    m = attribute_model()
    own, attr = m.item_emb.weight, m.attr_emb.weight
    table = m.item_table()
    torch.testing.assert_close(table[1], own[1] + attr[1])
    torch.testing.assert_close(table[3], own[3] + (attr[1] + attr[2]) / 2)
    torch.testing.assert_close(table[7], own[7])  # no attributes: its own vector only
    assert not table[0].any()  # padding stays zero
    torch.testing.assert_close(m.item_weights(), table[:41])
    # next_item_scores builds the table once for both sides: the same scores as building it twice
    seq = left_pad([[1, 2, 3], [7]], 12)
    torch.testing.assert_close(m.next_item_scores(seq), m.scores(m(seq)[:, -1]))
    # the input side reads the same table: changing a shared attribute moves both items' states
    seq = left_pad([[1], [2], [7]], 12)
    before = m(seq)[:, -1].clone()
    with torch.no_grad():
        m.attr_emb.weight[1] += torch.randn(16)  # not a constant shift, which LayerNorm would remove
    after = m(seq)[:, -1]
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    torch.testing.assert_close(before[2], after[2])
    # training reaches the attribute vectors, and a saved model keeps its item-to-attribute table
    m.train()
    m.loss(m(left_pad([[1, 2, 3]], 12)), left_pad([[2, 3, 4]], 12)).backward()
    assert m.attr_emb.weight.grad[1:].abs().sum() > 0
    save_model(m.eval(), tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert torch.equal(back.item_attrs, m.item_attrs)
    seq = left_pad([[1, 2, 3], [4, 5]], 12)
    torch.testing.assert_close(m.next_item_scores(seq), back.next_item_scores(seq))


def test_item_attribute_table_must_match_the_config():
    cfg = SeqRecConfig(n_items=40, d_model=16, item_attributes=True, n_attributes=2, max_item_attributes=2)
    with pytest.raises(ValueError, match="item_attributes has shape"):
        SeqRec(cfg, torch.zeros(41, 2, dtype=torch.long))


def test_id_dropout_leaves_only_attributes_for_some_items_in_training():
    m = attribute_model(id_dropout=0.5)
    torch.testing.assert_close(m.item_table(), m.item_emb.weight + m.attr_emb(m.item_attrs))  # eval: off
    m.train()
    torch.manual_seed(1)
    table = m.item_table()
    attrs = m.attr_emb(m.item_attrs)
    dropped = torch.isclose(table, attrs).all(1) & m.item_emb.weight.abs().sum(1).gt(0)
    kept = torch.isclose(table, m.item_emb.weight + attrs).all(1)
    assert 5 < int(dropped.sum()) < 37 and bool((dropped | kept).all())
    with pytest.raises(ValueError, match="id_dropout"):
        SeqRecConfig(id_dropout=0.2)  # without item_attributes an item would have nothing left
