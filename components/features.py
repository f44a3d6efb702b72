from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def features(shards: Input[list[Dataset]], ingest_summary: Input[Dataset], features: Output[Dataset],
             metrics: Output[Metrics]):
    """The features' final step: item vocabulary and counts, the shard manifest and stats from all shards."""
    from pathlib import Path

    from shoprec.data.shards import finish_features

    stats = finish_features([s.path for s in shards], Path(ingest_summary.path) / "catalog.parquet", features.path)
    for key, value in stats.items():
        metrics.log_metric(key, value)
