from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE)
def features(ingested: Input[Dataset], features: Output[Dataset], metrics: Output[Metrics]):
    """Sequences with a leave-one-out split, item vocabulary, search pairs and click samples."""
    from shoprec.features import build_features

    stats = build_features(ingested.path, features.path)
    for key, value in stats.items():
        metrics.log_metric(key, value)
