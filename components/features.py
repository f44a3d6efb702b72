
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def features(partials: Input[list[Dataset]], ingest_summary: Input[Dataset], features: Output[Dataset],
             metrics: Output[Metrics]):
    """Sequences with a leave-one-out split, item vocabulary, search pairs and click samples, from all days."""
    from pathlib import Path

    from shoprec.data.features import merge_features

    stats = merge_features([p.path for p in partials], Path(ingest_summary.path) / "catalog.parquet", features.path)
    for key, value in stats.items():
        metrics.log_metric(key, value)
