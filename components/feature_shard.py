from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feature_shard(partials: Input[Dataset], ingest_summary: Input[Dataset], shard: int, shards: int,
                  features_shard: Output[Dataset]):
    """One shopper-hash shard of the features (sequences, search pairs, click samples, item counts) from all days."""
    from pathlib import Path

    from shoprec.data.shards import gathered_partials, shard_features

    shard_features(gathered_partials(partials.path), Path(ingest_summary.path) / "catalog.parquet", shard, shards,
                   features_shard.path)
