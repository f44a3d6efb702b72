from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE)
def ingest(data_uri: str, max_quarantine: float, ingested: Output[Dataset], metrics: Output[Metrics]) -> str:
    """Validate raw events from a folder or s3:// URI; returns the data snapshot (partitions and row counts) as JSON."""
    import json

    from shoprec.ingest import ingest as run_ingest

    report = run_ingest(data_uri, ingested.path, max_quarantine_fraction=max_quarantine)
    for key in ("rows_in", "accepted", "quarantined", "files", "catalog_items"):
        metrics.log_metric(key, getattr(report, key))
    ingested.metadata.update({"rows_in": report.rows_in, "accepted": report.accepted, "quarantined": report.quarantined})
    return json.dumps({"source": data_uri, "partitions": report.partitions})
