"""Submit and schedule the compiled retrain pipeline on a Kubeflow Pipelines server (the v2beta1 API).

    submit("retrain.yaml", host)                      one run now
    schedule("retrain.yaml", host, cron=...)          a recurring run (nightly by default)
    disable_schedule(host, "shoprec-retrain-nightly") stop it (by name or id); list_schedules(host)

KFP's cron has six fields, seconds first (``0 0 2 * * *`` is 02:00:00 every day, in the server's time
zone, usually UTC). A schedule runs at most one run at a time (``max_concurrency=1``) and does not make
up for the times it missed while paused or down (``no_catchup=True``): a nightly retrain that fell behind
should run once, on the newest data, not once per missed night. Scheduling again under the same name
replaces the old recurring run instead of adding a second one.

The kfp client prints links to stdout; here they go to stderr, so the CLI's stdout stays JSON.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shoprec"
DEFAULT_SCHEDULE = "shoprec-retrain-nightly"
NIGHTLY = "0 0 2 * * *"


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


def client(host: str, namespace: str | None = None):
    import kfp

    with _talking_to(host):
        return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _package(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no compiled pipeline at {p} (shoprec pipeline compile -o {p})")
    return str(p)


def _experiment_id(c, name: str, namespace: str | None) -> str:
    """The id of the experiment ``name``, made if it does not exist yet."""
    return c.create_experiment(name=name, namespace=namespace).experiment_id


def submit(package_path: str | Path, host: str, experiment: str | None = None, params: dict | None = None,
           run_name: str | None = None, namespace: str | None = None, enable_caching: bool | None = None) -> dict:
    """Start one run of the compiled pipeline; its id and where to watch it."""
    package = _package(package_path)
    c = client(host, namespace)
    experiment = experiment or DEFAULT_EXPERIMENT
    run_name = run_name or f"{Path(package).stem}-{_now()}"
    with _talking_to(host):
        result = c.create_run_from_pipeline_package(package, arguments=params or {}, run_name=run_name,
                                                    experiment_name=experiment, namespace=namespace,
                                                    enable_caching=enable_caching)
    log.info("submitted run %s (%s) in experiment %s on %s", result.run_id, run_name, experiment, host)
    return {"run_id": result.run_id, "run_name": run_name, "experiment": experiment, "host": host,
            "url": f"{host.rstrip('/')}/#/runs/details/{result.run_id}"}


def schedule(package_path: str | Path, host: str, cron: str = NIGHTLY, name: str = DEFAULT_SCHEDULE,
             experiment: str | None = None, params: dict | None = None, namespace: str | None = None,
             replace: bool = True) -> dict:
    """A recurring run of the compiled pipeline on ``cron`` (one at a time, no catch-up)."""
    cron = check_cron(cron)
    package = _package(package_path)
    c = client(host, namespace)
    experiment = experiment or DEFAULT_EXPERIMENT
    replaced = []
    with _talking_to(host):
        for old in _find(c, name, namespace):
            if not replace:
                raise KfpError(f"a recurring run named {name!r} exists ({old.recurring_run_id}); disable or replace it")
            c.delete_recurring_run(old.recurring_run_id)
            replaced.append(old.recurring_run_id)
        rr = c.create_recurring_run(experiment_id=_experiment_id(c, experiment, namespace), job_name=name,
                                    description=f"shoprec retrain, cron {cron}", cron_expression=cron,
                                    max_concurrency=1, no_catchup=True, params=params or {},
                                    pipeline_package_path=package, enabled=True)
    log.info("scheduled %s (%s) on %s with cron %r", name, rr.recurring_run_id, host, cron)
    return {"recurring_run_id": rr.recurring_run_id, "name": name, "cron": cron, "experiment": experiment,
            "max_concurrency": 1, "no_catchup": True, "replaced": replaced, "host": host}


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


def disable_schedule(host: str, name_or_id: str, namespace: str | None = None) -> dict:
    """Disable (pause) the recurring run with this name or id; it stays listed and can be enabled again."""
    c = client(host, namespace)
    with _talking_to(host):
        found = _find(c, name_or_id, namespace)
        if not found:
            raise KfpError(f"no recurring run named or with id {name_or_id!r} on {host}")
        for r in found:
            c.disable_recurring_run(r.recurring_run_id)
    return {"disabled": [r.recurring_run_id for r in found], "name": name_or_id, "host": host}


def list_schedules(host: str, namespace: str | None = None) -> list[dict]:
    """Every recurring run on the server: id, name, cron, status, concurrency and catch-up settings."""
    c = client(host, namespace)
    out = []
    with _talking_to(host):
        runs = _all_recurring_runs(c, namespace)
    for r in runs:
        cron = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else None
        out.append({"recurring_run_id": r.recurring_run_id, "name": r.display_name, "cron": cron,
                    "status": r.status, "max_concurrency": r.max_concurrency, "no_catchup": r.no_catchup,
                    "experiment_id": r.experiment_id, "created_at": str(r.created_at) if r.created_at else None})
    return out


def parse_params(pairs: list[str] | tuple[str, ...]) -> dict:
    """``k=v`` pairs to pipeline arguments; a value that reads as JSON (3, 0.5, true) keeps that type."""
    import json

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
