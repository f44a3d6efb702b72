from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(data_uri: str, partition: str, max_quarantine: float, ingested: Output[Dataset], metrics: Output[Metrics]):
    """Validate one day of raw events from a folder or s3:// URI; accepted rows to Parquet, the rest quarantined."""
    from shoprec.data.ingest import ingest as run_ingest

    report = run_ingest(data_uri, ingested.path, max_quarantine_fraction=max_quarantine, partition=partition or None)
    for key in ("rows_in", "accepted", "quarantined", "files"):
        metrics.log_metric(key, getattr(report, key))
    ingested.metadata.update({"partition": partition, "rows_in": report.rows_in, "accepted": report.accepted,
                              "quarantined": report.quarantined})
