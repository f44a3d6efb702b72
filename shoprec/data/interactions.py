"""What a features folder is made of, from accepted events: shoppers' interactions and sequences, search
pairs, item attribute tokens. :mod:`shoprec.data.features` (partials, the merge) and :mod:`shoprec.data.shards`
(the merge by shopper shard) build on these."""

from __future__ import annotations

import pandas as pd

MIN_SEQUENCE = 3
HISTORY_TITLES = 5


def interactions(events: pd.DataFrame) -> pd.DataFrame:
    """The events that make up shoppers' sequences: product views outside search, clicks, carts, purchases."""
    is_interaction = events["event"].isin(["click", "add_to_cart", "purchase"]) | (
        (events["event"] == "view") & events["query"].isna())
    return events.loc[is_interaction, ["user_id", "ts", "item_id"]]


def interaction_sequences(rows: pd.DataFrame) -> pd.Series:
    """user_id -> list of item_id, chronological, consecutive repeats dropped."""
    df = rows[["user_id", "ts", "item_id"]].sort_values(["user_id", "ts"], kind="stable")
    repeat = (df["user_id"] == df["user_id"].shift()) & (df["item_id"] == df["item_id"].shift())
    df = df[~repeat]
    return df.groupby("user_id", sort=True)["item_id"].agg(list)


def search_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """(query, item) pairs shown in search results, with whether they were clicked and bought."""
    shown = events[events["query"].notna() & events["item_id"].notna() & events["event"].isin(["view", "click"])]
    pairs = (shown.assign(clicked=shown["event"] == "click")
             .groupby(["session_id", "query", "item_id"], sort=True)
             .agg(position=("position", "min"), clicked=("clicked", "any"), user_id=("user_id", "first"))
             .reset_index())
    bought = events.loc[events["event"] == "purchase", ["session_id", "item_id"]].drop_duplicates()
    bought["purchased"] = True
    pairs = pairs.merge(bought, on=["session_id", "item_id"], how="left")
    pairs["purchased"] = pairs["purchased"].astype("boolean").fillna(False).astype(bool) & pairs["clicked"]
    return pairs


def item_attribute_tokens(catalog: pd.DataFrame, item_ids: list[str]) -> list[list[str]]:
    """Each item's catalog category, brand and attributes as tokens (``category=...``, ``brand=...``,
    ``attr=...``): what the sequential model's ``item_attributes`` option embeds."""
    columns = {f: catalog[f].to_dict() for f in ("category", "brand", "attributes") if f in catalog}
    out = []
    for i in item_ids:
        tokens = [f"{f}={columns[f].get(i)}" for f in ("category", "brand")
                  if f in columns and isinstance(columns[f].get(i), str) and columns[f].get(i)]
        extra = columns["attributes"].get(i) if "attributes" in columns else None
        if extra is not None and len(extra):
            tokens += [f"attr={a}" for a in extra]
        out.append(tokens)
    return out
