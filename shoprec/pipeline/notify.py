"""One message per pipeline run to a webhook (Slack-compatible), saying what the night did.

The retrain DAG runs inside ``dsl.ExitHandler``; its exit step calls :func:`notify` with KFP's final status
of the run. The outcome comes from that status and from what the run left in the MLflow registry (the
versions tagged with its KFP run id, the aliases and the canary tag of :mod:`shoprec.pipeline.deploy`):

- ``failed``: the run failed; KFP's error and the stage it got to (nothing registered yet, or registered
  and then failed in deploy/promote);
- ``promoted``: the new version is @champion, with its NDCG@10 and the champion's before;
- ``rolled_back``: the canary failed its checks and the previous version serves again, with why;
- ``kept``: the gate kept the champion, with the evaluation's reason.

The body is ``{"text": ..., "shoprec": {...}}``: Slack shows ``text``, other receivers read ``shoprec``.
An empty URL turns notifications off. Posting is retried on connection errors and 5xx (httpx transport
retries and three attempts); a receiver that keeps failing fails the exit step, so the run shows it.
"""

from __future__ import annotations

import json
import logging
import time

log = logging.getLogger(__name__)


def run_outcome(state: str, error: str, model_name: str, kfp_run_id: str) -> dict:
    """What the run with ``kfp_run_id`` did for ``model_name``: outcome, version and why."""
    from shoprec.registry import versions as registry

    out: dict = {"model_name": model_name, "kfp_run_id": kfp_run_id, "state": state}
    try:
        versions = registry.client().search_model_versions(
            f"name='{model_name}' and tags.`{registry.KFP_RUN_TAG}` = '{kfp_run_id}'")
    except Exception as e:  # the registry may be what failed: say so, do not hide the run's own outcome
        versions, out["registry_error"] = [], str(e)[:300]
    mv = max(versions, key=lambda v: int(v.version)) if versions else None
    tags = (mv.tags or {}) if mv else {}
    if mv:
        out["version"] = str(mv.version)
        out["evaluation"] = _json(tags.get("shoprec.evaluation"))
        out["reason"] = tags.get("shoprec.reason", "")
    if state != "SUCCEEDED":
        stage = "after registering v" + out["version"] if mv else "before a version was registered"
        return {**out, "outcome": "failed", "error": error or "no error message from KFP", "stage": stage}
    if mv is None:
        return {**out, "outcome": "failed", "error": "the run succeeded but registered no version",
                "stage": "register"}
    canary = tags.get("shoprec.canary", "")  # "passed: ..." or "failed: ..." (shoprec.pipeline.deploy.promote)
    if canary.startswith("failed"):
        return {**out, "outcome": "rolled_back", "reason": canary.partition(": ")[2]}
    champion = registry.version_by_alias(model_name, registry.CHAMPION)
    if champion is not None and str(champion.version) == str(mv.version):
        before = registry.client().get_run(mv.run_id).data.metrics.get("champion_ndcg_at_10")
        return {**out, "outcome": "promoted", "champion_ndcg@10_before": before}
    return {**out, "outcome": "kept", "champion_version": str(champion.version) if champion else None}


def _json(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def message(outcome: dict) -> dict:
    """The webhook body: Slack's ``text`` plus the outcome as data."""
    name, kind = outcome["model_name"], outcome["outcome"]
    ndcg = outcome.get("evaluation", {}).get("ndcg@10")
    ndcg_text = f"NDCG@10 {ndcg:.4f}" if isinstance(ndcg, (int, float)) else "NDCG@10 n/a"
    if kind == "promoted":
        before = outcome.get("champion_ndcg@10_before")
        vs = f" vs champion {before:.4f}" if isinstance(before, (int, float)) else " (no champion before)"
        text = f":white_check_mark: {name} v{outcome['version']} promoted to @champion: {ndcg_text}{vs}"
    elif kind == "kept":
        text = (f":information_source: {name}: kept champion v{outcome.get('champion_version')}; "
                f"v{outcome.get('version')} stays @challenger ({ndcg_text}): {outcome.get('reason', '')}")
    elif kind == "rolled_back":
        text = f":warning: {name} v{outcome.get('version')}: canary rolled back: {outcome.get('reason', '')}"
    else:
        text = f":x: {name} retrain failed {outcome['stage']}: {outcome['error']}"
    return {"text": f"{text} (KFP run {outcome['kfp_run_id']})", "shoprec": outcome}


def post(url: str, body: dict, attempts: int = 3, timeout: float = 10.0) -> int:
    """POST ``body`` as JSON; retried on connection errors and 5xx; returns the status code."""
    import httpx

    last = None
    with httpx.Client(transport=httpx.HTTPTransport(retries=2), timeout=timeout) as client:
        for attempt in range(1, attempts + 1):
            try:
                r = client.post(url, json=body)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.status_code
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.TransportError as e:
                last = str(e)
            if attempt < attempts:
                time.sleep(2 ** attempt)
    raise RuntimeError(f"webhook {url} failed after {attempts} attempts: {last}")


def notify(webhook_url: str, state: str, error: str, model_name: str, kfp_run_id: str) -> dict:
    """Build the run's outcome and post it (when ``webhook_url`` is set); returns the message."""
    body = message(run_outcome(state, error, model_name, kfp_run_id))
    log.info("notify: %s", body["text"])
    if webhook_url:
        post(webhook_url, body)
    return body
