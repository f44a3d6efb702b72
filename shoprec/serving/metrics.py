"""The server's Prometheus metrics."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("shoprec_requests", "HTTP requests.", ["path", "status"], registry=r)
        self.errors = Counter("shoprec_request_errors", "HTTP requests answered 4xx or 5xx.", ["path", "status"],
                              registry=r)
        self.latency = Histogram("shoprec_request_latency_seconds", "Time from request to last byte.", ["path"],
                                 registry=r, buckets=(.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05,
                                                      .1, .25, .5, 1, 2.5))
        self.batch = Histogram("shoprec_batch_size", "Requests per model forward.", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.forward = Histogram("shoprec_batch_seconds", "Time of one batched forward.", registry=r,
                                 buckets=(.0005, .001, .002, .005, .01, .025, .05, .1))
        self.version = Gauge("shoprec_model_version", "Registered version being served (0: a local folder).",
                             ["model"], registry=r)
        self.info = Gauge("shoprec_model_info", "The model being served.", ["model", "version", "uri"], registry=r)
        self.created = Gauge("shoprec_model_created_timestamp_seconds", "When the served version was registered "
                             "(a local folder: its weights' mtime), Unix seconds.", ["model"], registry=r)
        self.reloads = Counter("shoprec_model_reloads", "Model reloads.", ["result"], registry=r)
        self.rec_source = Counter("shoprec_recommend_source", "/v1/recommend answers by where the list came from.",
                                  ["source"], registry=r)
        for source in ("store", "model"):
            self.rec_source.labels(source)
        for result in ("changed", "unchanged", "error"):  # at 0 from the start, so the first error is an increase
            self.reloads.labels(result)
        self.search_stage = Histogram("shoprec_search_stage_seconds", "Time of one /v1/search stage.", ["stage"],
                                      registry=r, buckets=(.001, .0025, .005, .01, .02, .03, .04, .06, .1, .25, 1))

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch.observe(n)
        self.forward.observe(seconds)

    def set_model(self, loaded, uri: str) -> None:
        """``loaded``: the :class:`shoprec.serving.loading.Loaded` now served."""
        self.info.clear()
        self.info.labels(loaded.name, loaded.version, uri).set(1)
        self.version.labels(loaded.name).set(int(loaded.version) if loaded.version.isdigit() else 0)
        self.created.clear()
        self.created.labels(loaded.name).set(loaded.created_at)
