"""Submit and schedule the compiled retrain pipeline on a Kubeflow Pipelines server (the v2beta1 API).

    submit("retrain.yaml", host)                      one run now
    schedule("retrain.yaml", host, cron=...)          a recurring run (nightly by default)
    disable_schedule(host, "shoprec-retrain-nightly") stop it (by name or id); list_schedules(host)

The compiled package is uploaded as a **pipeline version** first (``upload_pipeline`` for a pipeline not
there yet, ``upload_pipeline_version`` for one that is; a version whose content is already there, named
by its SHA-256, is reused), and runs and recurring runs are made from that version, so the KFP UI lists
the versions and each run links to the one it ran.

Multi-user KFP (Kubeflow profiles): ``namespace`` is the profile's namespace. The pipeline is uploaded
there, the experiment is made there, and runs and recurring runs belong to it through their experiment
(in v2beta1 their own ``namespace`` is output only, derived from the experiment). Credentials: a bearer
token (``token``, sent as ``Authorization: Bearer ...``; kfp.Client's ``existing_token``) or a token file
(``token_file``, e.g. a projected service-account token with audience ``pipelines.kubeflow.org``), read
again on every request, so a token the kubelet rotates keeps working (kfp's
``ServiceAccountTokenVolumeCredentials``).

KFP's cron has six fields, seconds first (``0 0 2 * * *`` is 02:00:00 every day, in the server's time
zone, usually UTC). A schedule runs at most one run at a time (``max_concurrency=1``) and does not make
up for the times it missed while paused or down (``no_catchup=True``): a nightly retrain that fell behind
should run once, on the newest data, not once per missed night. Scheduling again under the same name
replaces the old recurring run: the new one is created first and the old one deleted after, so a failed
create leaves the old schedule running rather than none.

The kfp client prints links to stdout; here they go to stderr, so the CLI's stdout stays JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shoprec"
DEFAULT_SCHEDULE = "shoprec-retrain-nightly"
NIGHTLY = "0 0 2 * * *"
TOKEN_ENV = "KF_PIPELINES_TOKEN"  # a bearer token for the KFP API (the CLI reads it from here, never from argv)
TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's own variable for a token file


class KfpError(RuntimeError):
    """The KFP server refused or could not be reached; the message says which host and what."""


def check_cron(cron: str) -> str:
    """KFP's 6-field cron (seconds first); a 5-field Unix cron is refused with the fix in the message."""
    fields = cron.split()
    if len(fields) == 5:
        raise ValueError(f"KFP cron has 6 fields, seconds first: did you mean {'0 ' + cron!r}?")
    if len(fields) != 6:
        raise ValueError(f"KFP cron needs 6 fields (sec min hour day month weekday), got {cron!r}")
    return " ".join(fields)


@contextlib.contextmanager
def _talking_to(host: str):
    """KFP's links to stderr, and any failure of the API calls as one KfpError naming the host."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield
        except ApiException as e:
            raise KfpError(f"Kubeflow Pipelines at {host} answered {e.status} {e.reason}: {(e.body or '')[:500]}") from e
        except (HTTPError, OSError) as e:
            raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: {e}") from e


def auth_kwargs(token: str | None = None, token_file: str | Path | None = None) -> dict:
    """kfp.Client's credential arguments: ``existing_token`` for a token, ``credentials`` for a token file."""
    if token is not None and token_file is not None:
        raise ValueError("give a KFP token or a token file, not both")
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"no KFP token file at {path}")
        if not path.read_text().strip():
            raise ValueError(f"the KFP token file {path} is empty")
        from kfp.client import ServiceAccountTokenVolumeCredentials

        return {"credentials": ServiceAccountTokenVolumeCredentials(str(path))}
    if token is not None:
        if not token.strip():
            raise ValueError("the KFP token is empty")
        return {"existing_token": token.strip()}
    return {}


def client(host: str, namespace: str | None = None, token: str | None = None, token_file: str | Path | None = None):
    import kfp

    auth = auth_kwargs(token, token_file)
    with _talking_to(host):
        return kfp.Client(host=host, namespace=namespace or "kubeflow", **auth)


def _package(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no compiled pipeline at {p} (shoprec pipeline compile -o {p})")
    return str(p)


def _experiment_id(c, name: str, namespace: str | None) -> str:
    """The id of the experiment ``name`` in ``namespace``, made if it does not exist yet."""
    return c.create_experiment(name=name, namespace=namespace).experiment_id


def _pipeline_name(package: str) -> str:
    import yaml

    return next(yaml.safe_load_all(Path(package).read_text()))["pipelineInfo"]["name"]


def _with_caching(package: str, enable_caching: bool | None) -> str:
    """``package``, or a copy with every task's cache option set (a version keeps what it was uploaded with)."""
    if enable_caching is None:
        return package
    import yaml

    docs = list(yaml.safe_load_all(Path(package).read_text()))
    spec = docs[0]
    dags = [spec["root"]] + [c for c in spec.get("components", {}).values()]
    for dag in dags:
        for task in (dag.get("dag") or {}).get("tasks", {}).values():
            task.setdefault("cachingOptions", {})["enableCache"] = enable_caching
    out = tempfile.NamedTemporaryFile("w", prefix="shoprec-pipeline-", suffix=".yaml", delete=False)
    with out:
        yaml.safe_dump_all(docs, out, sort_keys=False)
    return out.name


def _by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": name}]})


def _pipeline_id(c, name: str, namespace: str | None) -> str | None:
    found = c.list_pipelines(filter=_by_name(name), namespace=namespace, page_size=2).pipelines or []
    if len(found) > 1:
        raise KfpError(f"{len(found)} pipelines named {name!r} in namespace {namespace!r}: the name must be unique")
    return found[0].pipeline_id if found else None


def _versions(c, pipeline_id: str, name: str | None = None) -> list:
    page = c.list_pipeline_versions(pipeline_id, page_size=100, sort_by="created_at desc",
                                    filter=_by_name(name) if name else None)
    return page.pipeline_versions or []


def upload_version(c, package: str, pipeline_name: str | None = None, namespace: str | None = None) -> dict:
    """The pipeline version holding ``package``: ``upload_pipeline`` if no pipeline ``pipeline_name`` (default:
    the package's own name) is in ``namespace`` yet, else ``upload_pipeline_version`` named
    ``<pipeline>-<sha256 of the package, 12 hex>``, or the version of that name if it is already there."""
    name = pipeline_name or _pipeline_name(package)
    version_name = f"{name}-{hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]}"
    description = f"shoprec retrain, uploaded by shoprec pipeline submit/schedule ({version_name})"
    pipeline_id = _pipeline_id(c, name, namespace)
    if pipeline_id is None:
        pipeline_id = c.upload_pipeline(package, pipeline_name=name, description=description,
                                        namespace=namespace).pipeline_id
        versions = _versions(c, pipeline_id)  # the one version upload_pipeline made
        if not versions:
            raise KfpError(f"pipeline {name!r} ({pipeline_id}) was uploaded but has no version")
        version, uploaded = versions[0], True
    else:
        existing = _versions(c, pipeline_id, version_name)
        uploaded = not existing
        version = existing[0] if existing else c.upload_pipeline_version(
            package, version_name, pipeline_id=pipeline_id, description=description)
    log.info("pipeline %s (%s) version %s (%s)%s", name, pipeline_id, version.display_name,
             version.pipeline_version_id, "" if uploaded else ", already uploaded")
    return {"pipeline": name, "pipeline_id": pipeline_id, "version": version.display_name,
            "version_id": version.pipeline_version_id, "uploaded": uploaded}


def submit(package_path: str | Path, host: str, experiment: str | None = None, params: dict | None = None,
           run_name: str | None = None, namespace: str | None = None, enable_caching: bool | None = None,
           pipeline_name: str | None = None, token: str | None = None, token_file: str | Path | None = None) -> dict:
    """Upload the compiled pipeline as a version and start one run of that version; its id and where to watch it."""
    package = _package(package_path)
    c = client(host, namespace, token, token_file)
    experiment = experiment or DEFAULT_EXPERIMENT
    run_name = run_name or f"{Path(package).stem}-{_now()}"
    uploaded = _with_caching(package, enable_caching)
    try:
        with _talking_to(host):
            version = upload_version(c, uploaded, pipeline_name, namespace)
            result = c.run_pipeline(_experiment_id(c, experiment, namespace), run_name, params=params or {},
                                    pipeline_id=version["pipeline_id"], version_id=version["version_id"])
    finally:
        if uploaded != package:
            Path(uploaded).unlink()
    log.info("submitted run %s (%s) in experiment %s on %s", result.run_id, run_name, experiment, host)
    return {"run_id": result.run_id, "run_name": run_name, "experiment": experiment, "namespace": namespace,
            "host": host, **version, "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def schedule(package_path: str | Path, host: str, cron: str = NIGHTLY, name: str = DEFAULT_SCHEDULE,
             experiment: str | None = None, params: dict | None = None, namespace: str | None = None,
             replace: bool = True, pipeline_name: str | None = None, token: str | None = None,
             token_file: str | Path | None = None) -> dict:
    """A recurring run of the compiled pipeline's version on ``cron`` (one at a time, no catch-up).

    One of the same name is replaced: the new one is created first, then the old one deleted."""
    cron = check_cron(cron)
    package = _package(package_path)
    c = client(host, namespace, token, token_file)
    experiment = experiment or DEFAULT_EXPERIMENT
    with _talking_to(host):
        old = _find(c, name, namespace)
        if old and not replace:
            raise KfpError(f"a recurring run named {name!r} exists ({old[0].recurring_run_id}); disable or replace it")
        version = upload_version(c, package, pipeline_name, namespace)
        rr = c.create_recurring_run(experiment_id=_experiment_id(c, experiment, namespace), job_name=name,
                                    description=f"shoprec retrain, cron {cron}", cron_expression=cron,
                                    max_concurrency=1, no_catchup=True, params=params or {},
                                    pipeline_id=version["pipeline_id"], version_id=version["version_id"],
                                    enabled=True)
    replaced = _delete_replaced(c, host, old, rr.recurring_run_id)
    log.info("scheduled %s (%s) on %s with cron %r", name, rr.recurring_run_id, host, cron)
    return {"recurring_run_id": rr.recurring_run_id, "name": name, "cron": cron, "experiment": experiment,
            "namespace": namespace, "max_concurrency": 1, "no_catchup": True, "replaced": replaced, "host": host,
            **version}


def _delete_replaced(c, host: str, old: list, new_id: str) -> list[str]:
    """Delete the recurring runs ``new_id`` replaces; a failure names both, since two schedules now run."""
    from kfp_server_api.exceptions import ApiException

    deleted = []
    for r in old:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                c.delete_recurring_run(r.recurring_run_id)
        except ApiException as e:
            raise KfpError(f"created recurring run {new_id} on {host} but could not delete the one it replaces, "
                           f"{r.recurring_run_id} ({e.status} {e.reason}): both are scheduled now; delete "
                           f"{r.recurring_run_id} by hand") from e
        deleted.append(r.recurring_run_id)
    return deleted


def _all_recurring_runs(c, namespace: str | None = None) -> list:
    runs, token = [], ""
    while True:
        page = c.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        runs.extend(page.recurring_runs or [])
        token = page.next_page_token
        if not token:
            return runs


def _find(c, name_or_id: str, namespace: str | None = None) -> list:
    return [r for r in _all_recurring_runs(c, namespace) if name_or_id in (r.recurring_run_id, r.display_name)]


def disable_schedule(host: str, name_or_id: str, namespace: str | None = None, token: str | None = None,
                     token_file: str | Path | None = None) -> dict:
    """Disable (pause) the recurring run with this name or id; it stays listed and can be enabled again."""
    c = client(host, namespace, token, token_file)
    with _talking_to(host):
        found = _find(c, name_or_id, namespace)
        if not found:
            raise KfpError(f"no recurring run named or with id {name_or_id!r} on {host}")
        for r in found:
            c.disable_recurring_run(r.recurring_run_id)
    return {"disabled": [r.recurring_run_id for r in found], "name": name_or_id, "host": host}


def list_schedules(host: str, namespace: str | None = None, token: str | None = None,
                   token_file: str | Path | None = None) -> list[dict]:
    """Every recurring run on the server (in ``namespace``): id, name, cron, status, concurrency, catch-up,
    and the pipeline version it runs."""
    c = client(host, namespace, token, token_file)
    out = []
    with _talking_to(host):
        runs = _all_recurring_runs(c, namespace)
    for r in runs:
        cron = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else None
        out.append({"recurring_run_id": r.recurring_run_id, "name": r.display_name, "cron": cron,
                    "status": r.status, "max_concurrency": r.max_concurrency, "no_catchup": r.no_catchup,
                    "experiment_id": r.experiment_id, "created_at": str(r.created_at) if r.created_at else None,
                    "pipeline_version_id": ref.pipeline_version_id if (ref := r.pipeline_version_reference) else None})
    return out


def parse_params(pairs: list[str] | tuple[str, ...]) -> dict:
    """``k=v`` pairs to pipeline arguments; a value that reads as JSON (3, 0.5, true) keeps that type."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes key=value, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
