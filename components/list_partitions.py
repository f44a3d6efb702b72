
from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_partitions(data_uri: str, lookback_days: int = 0, start_date: str = "", end_date: str = "") -> list[str]:
    """The days of raw logs under data_uri/events in the data window (0 / empty: all): one ingest task per day."""
    from shoprec.data.storage import list_partitions as days

    return days(data_uri, lookback_days=lookback_days, start=start_date, end=end_date)
