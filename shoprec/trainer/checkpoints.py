"""Training checkpoints kept in object storage, so that a retried train step resumes instead of starting over.

A pod's disk goes with the pod: when KFP retries the train step (``set_retry``) the new pod has no
``<out>/checkpoints/``. With a store configured, :func:`shoprec.seqrec.train.train` copies that folder
(``last.pt``: model, optimizer, scheduler and loop state; ``best/``: the best epoch's weights) to
``s3://<bucket>/<prefix>/<run id>/<step>/`` after every epoch (rank 0) and copies it back before training
starts (local rank 0 of every node), so a retry picks up after the last finished epoch. The key is the
KFP run id and the step name, which stay the same across retries of a step. The checkpoints never go
into the Model artifact (the train component stages the model without them).

Where the store is (:func:`root_for`): the train component's ``checkpoint_root`` parameter, else
``SHOPREC_CHECKPOINT_ROOT``, else ``s3://<bucket of the Model artifact>/shoprec-checkpoints`` when the
artifact itself is in object storage (a cluster's pipeline root). With none of these (``kfp.local``,
``shoprec train``) nothing changes: checkpoints stay in the local folder. Nothing deletes old runs'
checkpoints: give the prefix a lifecycle rule (e.g. expire after 14 days).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shoprec.data.storage import S3Location, StorageError, s3_client

log = logging.getLogger(__name__)

ENV_ROOT = "SHOPREC_CHECKPOINT_ROOT"
DEFAULT_PREFIX = "shoprec-checkpoints"
OBJECT_STORE_SCHEMES = ("s3://", "minio://")


def root_for(artifact_uri: str = "", explicit: str = "") -> str:
    """The store's base URI ("" for none): ``explicit``, else ``$SHOPREC_CHECKPOINT_ROOT``, else a prefix in the
    bucket of ``artifact_uri`` when that is in object storage (KFP writes ``minio://`` for its MinIO)."""
    root = explicit or os.environ.get(ENV_ROOT, "")
    if root:
        if not root.startswith("s3://"):
            raise ValueError(f"checkpoint store {root!r} must be an s3:// URI (S3 or MinIO through AWS_ENDPOINT_URL)")
        return root.rstrip("/")
    for scheme in OBJECT_STORE_SCHEMES:
        if artifact_uri.startswith(scheme):
            bucket = artifact_uri[len(scheme):].split("/", 1)[0]
            return f"s3://{bucket}/{DEFAULT_PREFIX}"
    return ""


def checkpoint_uri(root: str, run_id: str, step: str) -> str:
    """``root/run_id/step``: the same for every retry of one step of one pipeline run."""
    if not root:
        return ""
    if not run_id or "/" in run_id or not step or "/" in step:
        raise ValueError(f"a checkpoint location needs a run id and a step name without '/', got {run_id!r}, {step!r}")
    return f"{root.rstrip('/')}/{run_id}/{step}"


def _files(folder: Path) -> list[Path]:
    """Files to copy, ``last.pt`` last: a store that has a ``last.pt`` also has the ``best/`` it refers to.
    Temporary files of atomic writes (``.name.tmp``) are skipped."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.name == "last.pt", str(p)))


class CheckpointStore:
    """A checkpoint folder mirrored at ``uri`` (``s3://bucket/prefix``)."""

    def __init__(self, uri: str):
        if not uri.startswith("s3://"):
            raise ValueError(f"checkpoint store {uri!r} must be an s3:// URI")
        self.uri = uri.rstrip("/")
        self.loc = S3Location.parse(self.uri)
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last uploaded

    def _key(self, rel: str) -> str:
        return f"{self.loc.prefix}/{rel}" if self.loc.prefix else rel

    def save(self, folder: str | Path) -> int:
        """Upload the files of ``folder`` that changed since the last save; returns how many. A failed upload
        is logged, not raised (training goes on; the next save sends what is still missing)."""
        folder, client, n = Path(folder), s3_client(), 0
        for path in _files(folder):
            rel, stat = path.relative_to(folder).as_posix(), path.stat()
            if self._sent.get(rel) == (stat.st_size, stat.st_mtime_ns):
                continue
            try:
                client.upload_file(str(path), self.loc.bucket, self._key(rel))
            except Exception as e:  # botocore raises many types; they all mean "not stored this time"
                log.warning("could not store checkpoint file %s at %s/%s (%s); a retry would resume from the "
                            "previous epoch", rel, self.uri, rel, e)
                return n
            self._sent[rel] = (stat.st_size, stat.st_mtime_ns)
            n += 1
        return n

    def restore(self, folder: str | Path) -> int:
        """Download every stored file into ``folder`` (replacing local ones); returns how many (0: nothing
        stored yet, a first attempt)."""
        folder, client = Path(folder), s3_client()
        prefix = self._key("")
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.loc.bucket, Prefix=prefix)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            for key in keys:
                target = folder / key[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.download")
                client.download_file(self.loc.bucket, key, str(tmp))
                os.replace(tmp, target)
                stat = target.stat()  # what the store already has need not be sent back
                self._sent[key[len(prefix):]] = (stat.st_size, stat.st_mtime_ns)
        except Exception as e:
            raise StorageError(f"cannot restore checkpoints from {self.uri} at "
                               f"{os.environ.get('AWS_ENDPOINT_URL', 'the default AWS S3 endpoint')}: {e}") from e
        return len(keys)
