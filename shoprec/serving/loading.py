"""The model being served: loading a version, and swapping in a new one when its alias moves."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from shoprec.seqrec.recommend import Recommender
from shoprec.serving.batching import Job, MicroBatcher, run_jobs
from shoprec.serving.model_uri import model_created_at, parse_models_uri, resolve_model
from shoprec.serving.search import TitleSearch

log = logging.getLogger(__name__)


class Loaded:
    """One model version being served: recommender, search index and its batcher."""

    def __init__(self, folder: Path, name: str, version: str, executor, max_batch: int, max_wait_ms: float,
                 on_batch=None, make_index=None, created_at: float = 0.0):
        self.folder, self.name, self.version, self.created_at = folder, name, version, created_at
        self.rec = Recommender(folder)
        self.index = make_index(self.rec) if make_index else None  # SearchIndex: fused retrieval + re-rank
        self.search = None if self.index is not None else TitleSearch(self.rec.titles[1:])
        self.batcher = MicroBatcher(lambda jobs: run_jobs(self.rec, jobs), executor, max_batch=max_batch,
                                    max_wait_ms=max_wait_ms, on_batch=on_batch)
        some = next(iter(self.rec.histories.values()), [1])
        for n in (1, min(16, max_batch)):  # warm up so the first requests are not slow
            run_jobs(self.rec, [Job("recommend", some, 10)] * n)
        self.loaded_at = time.time()


class ModelHolder:
    """The model being served and how to reload it; ``current`` is swapped atomically."""

    def __init__(self, uri: str, executor, max_batch: int = 64, max_wait_ms: float = 0.0, on_batch=None,
                 make_index=None):
        self.uri, self.executor, self.make_index = uri, executor, make_index
        self.max_batch, self.max_wait_ms, self.on_batch = max_batch, max_wait_ms, on_batch
        self.current: Loaded | None = None
        self._lock = threading.Lock()
        self.alias = parse_models_uri(uri) if uri.startswith("models:/") and "@" in uri else None

    def load(self, force: bool = False) -> dict:
        """Load the version ``uri`` points at now, unless it is already served (blocking; call off the loop)."""
        with self._lock:
            old = self.current
            if old is not None and self.alias and not force:
                from shoprec.registry.versions import version_by_alias

                mv = version_by_alias(*self.alias)
                if mv is None:
                    raise RuntimeError(f"{self.uri}: alias no longer set; still serving v{old.version}")
                if str(mv.version) == old.version:
                    return {"changed": False, "version": old.version}
            folder, name, version = resolve_model(self.uri)
            new = Loaded(folder, name, version, self.executor, self.max_batch, self.max_wait_ms, self.on_batch,
                         self.make_index, created_at=model_created_at(self.uri, folder, name, version))
            self.current = new
            log.info("serving %s v%s from %s (%d items, %d known shoppers)%s", name, version, folder,
                     new.rec.n_items, len(new.rec.histories), f"; was v{old.version}" if old else "")
            return {"changed": True, "version": version, "previous": old.version if old else None}
