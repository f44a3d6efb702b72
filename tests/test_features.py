import pandas as pd

from shoprec.data.features import interaction_sequences, interactions, load_items, load_sequences


def test_sequences_are_chronological_without_repeats_or_impressions():
    ev = pd.DataFrame({
        "user_id": ["a"] * 6,
        "ts": pd.to_datetime(["2026-01-01 00:00:0" + str(i) for i in [5, 1, 2, 3, 4, 6]]),
        "event": ["purchase", "view", "view", "click", "view", "search"],
        "item_id": ["x", "p", "q", "q", "r", None],
        "query": [None, None, "shoes", "shoes", None, "shoes"],
    })
    # "q" shown in search results (view with a query) is an impression, not an interaction;
    # the click on it counts once.
    assert interaction_sequences(interactions(ev))["a"] == ["p", "q", "r", "x"]


def test_features_split_and_vocabulary(tiny_features):
    users, seqs = load_sequences(tiny_features)
    items = load_items(tiny_features)
    assert len(users) == len(seqs) > 100
    assert min(map(len, seqs)) >= 3
    assert items["idx"].tolist() == list(range(1, len(items) + 1))
    assert max(max(s) for s in seqs) == len(items)
    pairs = pd.read_parquet(tiny_features / "search_pairs.parquet")
    assert pairs["clicked"].any() and (~pairs["clicked"]).any()
    samples = pd.read_parquet(tiny_features / "click_samples.parquet")
    assert set(samples["clicked"]) == {0, 1} and samples["history"].str.len().min() > 0


def test_item_attributes_are_category_and_brand_tokens(tiny_features):
    items = load_items(tiny_features)
    # the simulated shop's brand is the first word of the title
    first = items.iloc[0]
    assert list(first["attributes"]) == [f"category={first['category']}", f"brand={first['title'].split()[0]}"]
    assert items["attributes"].map(len).eq(2).all()
