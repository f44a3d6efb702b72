
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_ingest(parts: Input[list[Dataset]], max_quarantine: float, summary: Output[Dataset],
                 metrics: Output[Metrics]) -> str:
    """Sum the days' ingest reports and check the quarantine limit over all of them; returns the data snapshot."""
    import json

    from shoprec.data.fanout import merge_ingest_reports

    total = merge_ingest_reports([p.path for p in parts], summary.path, max_quarantine_fraction=max_quarantine)
    for key in ("rows_in", "accepted", "quarantined", "files"):
        metrics.log_metric(key, total[key])
    return json.dumps({"partitions": total["partitions"], "rows_in": total["rows_in"],
                       "quarantined": total["quarantined"]})
