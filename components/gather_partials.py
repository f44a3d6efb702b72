from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gather_partials(partials: Input[list[Dataset]], gathered: Output[Dataset]):
    """All days' partials as one artifact (copied, not parsed), for the features shard tasks."""
    from shoprec.data.shards import gather_partials as gather

    gather([p.path for p in partials], gathered.path)
