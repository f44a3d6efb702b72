from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def day_features(ingested: Input[Dataset], partial: Output[Dataset]):
    """One day's interactions and search pairs, merged into sequences by the features step."""
    from shoprec.data.features import partial_features

    partial_features(ingested.path, partial.path)
