
from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_partitions(data_uri: str) -> list[str]:
    """The days of raw logs under data_uri/events: one ingest task runs per day."""
    from shoprec.storage import list_partitions as days

    return days(data_uri)
