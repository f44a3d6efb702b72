"""Roll a registered version out, check it, and promote it (or roll it back).

The release flow (pipeline steps ``register`` -> ``deploy`` -> ``promote``)::

    register   new version vN gets @challenger (the gate result is a tag; @champion does not move)
    deploy     serve models:/NAME/N (a pinned version, never an alias) to canary_percent of the traffic
    promote    canary Ready, smoke requests answered by vN, 5xx rate from its /metrics <= max_error_rate
                 passed -> vN gets all traffic, @champion -> vN
                 failed -> traffic back to the previous pinned version, @champion untouched, the step fails

Targets:

- ``local``: ``$SHOPREC_HOME/deployments/<name>.json`` names the pinned URI that ``shoprec serve``
  (and ``make demo``) serve; there is no traffic to split, so promote checks what makes sense locally
  (the version passed its evaluation gate) and moves @champion.
- ``kserve``: server-side apply of the fields shoprec owns on the InferenceService
  (:func:`shoprec.pipeline.k8s.owned_fields`), then waits for Ready. Every function takes the kubernetes
  ``CustomObjectsApi`` as ``api`` (default: the in-cluster config or kubeconfig), so tests pass one
  pointed at a recording stand-in.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from shoprec.pipeline import k8s
from shoprec.registry import versions as registry
from shoprec.registry.versions import CHAMPION, shoprec_home

log = logging.getLogger(__name__)

TOKEN_ENV = "SHOPREC_API_TOKEN"


class CanaryFailed(RuntimeError):
    """The canary did not pass its checks (it has been rolled back when this is raised by :func:`promote`)."""


def pinned_uri(name: str, version: str) -> str:
    if not str(version).isdigit():
        raise ValueError(f"a rollout needs a registered version number, got {version!r} for {name}")
    return f"models:/{name}/{version}"


def version_of(uri: str) -> str:
    """``N`` of ``models:/NAME/N`` (or the alias of ``models:/NAME@ALIAS``, or "")."""
    tail = uri.rsplit("/", 1)[-1] if uri.startswith("models:/") else ""
    return tail.split("@", 1)[1] if "@" in tail else tail


def ranker_to_serve(ranker_name: str, ranker_version: str = "", ranker_gate: bool = False) -> str:
    """The ranker version to serve next to a new recommender: the new one if its gate passed, else its champion."""
    if not ranker_name:
        return ""
    if ranker_gate and ranker_version:
        return str(ranker_version)
    champion = registry.version_by_alias(ranker_name, CHAMPION)
    return str(champion.version) if champion else ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ deploy
def deploy(model_name: str, version: str, target: str = "local", out: str | Path | None = None,
           namespace: str = "shoprec", ranker_name: str = "", ranker_version: str = "", canary_percent: int = 10,
           ready_timeout_s: float = 900.0, poll_s: float = 5.0, service: str | None = None, api=None) -> dict:
    """Serve ``models:/model_name/version`` on ``target``: a canary of ``canary_percent`` on KServe."""
    uri = pinned_uri(model_name, version)
    ranker_uri = pinned_uri(ranker_name, ranker_version) if ranker_name and ranker_version else ""
    record = {"target": target, "model_name": model_name, "version": str(version), "model_uri": uri,
              "ranker_name": ranker_name, "ranker_version": str(ranker_version or ""), "ranker_uri": ranker_uri,
              "at": _now()}
    if target == "local":
        return _deploy_local(record, out)
    if target == "kserve":
        return _deploy_kserve(record, api or k8s.custom_objects_api(), namespace, service or model_name,
                              canary_percent, ready_timeout_s, poll_s)
    raise ValueError(f"unknown deploy target {target!r}: use 'local' or 'kserve'")


def local_pointer(model_name: str, out: str | Path | None = None) -> Path:
    return Path(out) if out else shoprec_home() / "deployments" / f"{model_name}.json"


def _deploy_local(record: dict, out) -> dict:
    path = local_pointer(record["model_name"], out)
    previous = json.loads(path.read_text()) if path.exists() else {}
    record = {**record, "previous_model_uri": previous.get("model_uri", ""),
              "previous_ranker_uri": previous.get("ranker_uri", ""),
              "serve": f"shoprec serve --model {record['model_uri']}"
                       + (f" --ranker {record['ranker_uri']}" if record["ranker_uri"] else "")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    log.info("deploy: the local server now serves %s; pointer in %s", record["model_uri"], path)
    return record


def _deploy_kserve(record: dict, api, namespace: str, name: str, canary_percent: int, ready_timeout_s: float,
                   poll_s: float) -> dict:
    uri, version, ranker_uri = record["model_uri"], record["version"], record["ranker_uri"]
    live = k8s.get_inference_service(api, namespace, name)
    if live is None:  # nothing serves yet: there is no traffic to split
        manifest = k8s.render_inference_service(name, uri, namespace=namespace, ranker_uri=ranker_uri)
        manifest["metadata"]["annotations"].update(
            k8s.owned_fields(name, namespace, uri, version, ranker_uri)["metadata"]["annotations"])
        k8s.create_inference_service(api, manifest)
        previous_uri, previous_ranker, canary = "", "", None
        log.info("deploy: created InferenceService %s/%s serving %s", namespace, name, uri)
    else:
        previous_uri, previous_ranker = k8s.served_uris(live)
        if previous_uri == uri:  # a retry of this rollout: keep what it replaced
            annotations = live["metadata"].get("annotations") or {}
            previous_uri = annotations.get(k8s.PREVIOUS_ANNOTATION, "")
            previous_ranker = annotations.get(k8s.PREVIOUS_RANKER_ANNOTATION, "")
        canary = canary_percent
        k8s.apply_owned_fields(api, k8s.owned_fields(name, namespace, uri, version, ranker_uri, canary_percent=canary,
                                                     previous_uri=previous_uri, previous_ranker_uri=previous_ranker))
        log.info("deploy: %s/%s canary %s%% on %s (was %s)", namespace, name, canary, uri, previous_uri or "none")
    obj = k8s.wait_ready(api, namespace, name, ready_timeout_s, poll_s)
    return {**record, "applied": True, "namespace": namespace, "service": name, "canary_percent": canary,
            "previous_model_uri": previous_uri, "previous_ranker_uri": previous_ranker,
            "generation": obj["metadata"].get("generation")}


# ------------------------------------------------------------------ canary checks
def _get(http, url: str, token: str):
    return http.get(url, headers={"Authorization": f"Bearer {token}"} if token else {})


def error_rate(metrics_text: str) -> tuple[int, int]:
    """(5xx answers, all answers) to ``/v1/*`` counted by the server's ``shoprec_requests_total``."""
    from prometheus_client.parser import text_string_to_metric_families

    errors = total = 0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != "shoprec_requests_total" or not sample.labels.get("path", "").startswith("/v1/"):
                continue
            total += int(sample.value)
            errors += int(sample.value) if sample.labels.get("status", "").startswith("5") else 0
    return errors, total


def canary_checks(url: str, version: str, max_error_rate: float, token: str = "", smoke_requests: int = 5,
                  timeout_s: float = 30.0) -> dict:
    """Check the server at ``url`` serves ``version``, answers smoke requests, and its 5xx rate is low.

    Raises :class:`CanaryFailed` saying which check failed and with what numbers.
    """
    import httpx

    url = url.rstrip("/")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=timeout_s, headers=auth) as http:
        try:
            health = http.get(f"{url}/healthz")
        except httpx.HTTPError as e:
            raise CanaryFailed(f"canary at {url} unreachable: {e}") from e
        if health.status_code != 200:
            raise CanaryFailed(f"canary {url}/healthz answered {health.status_code}: {health.text[:200]}")
        served = str(health.json().get("version"))
        if served != str(version):
            raise CanaryFailed(f"canary at {url} serves v{served}, expected v{version}")
        answers = []
        for i in range(smoke_requests):
            search = http.post(f"{url}/v1/search", json={"query": "shoe", "k": 5})
            answers.append(search.status_code)
            if search.status_code == 200:
                items = [it["item_id"] for it in search.json().get("items", [])][: 1 + i % 3]
                rec = http.post(f"{url}/v1/recommend", json={"history": items or ["smoke"], "k": 5})
                answers.append(rec.status_code)
                if rec.status_code == 200 and str(rec.json().get("version")) != str(version):
                    raise CanaryFailed(f"canary /v1/recommend answered from v{rec.json().get('version')}, "
                                       f"expected v{version}")
        if 200 not in answers:
            raise CanaryFailed(f"canary at {url} answered no smoke request with 200 (got {answers})")
        metrics = http.get(f"{url}/metrics")
        if metrics.status_code != 200:
            raise CanaryFailed(f"canary {url}/metrics answered {metrics.status_code}")
    errors, total = error_rate(metrics.text)
    if total == 0:
        raise CanaryFailed(f"canary {url}/metrics counts no /v1 requests (shoprec_requests_total)")
    rate = errors / total
    if rate > max_error_rate:
        raise CanaryFailed(f"canary error rate {rate:.3f} ({errors} of {total} /v1 requests answered 5xx) is "
                           f"above max_error_rate {max_error_rate:g}")
    return {"url": url, "version": served, "smoke_answers": answers, "requests": total, "errors": errors,
            "error_rate": round(rate, 4)}


# ------------------------------------------------------------------ promote / roll back
def move_champions(deployment: dict, reason: str) -> list[dict]:
    """@champion to the deployed recommender (and ranker) versions; no move for a version already champion."""
    moves = []
    for name, version in ((deployment["model_name"], deployment["version"]),
                          (deployment.get("ranker_name"), deployment.get("ranker_version"))):
        if not name or not version:
            continue
        champion = registry.version_by_alias(name, CHAMPION)
        if champion is None or str(champion.version) != str(version):
            moves.append(registry.record_alias(name, CHAMPION, str(version), reason))
    return moves


def _check_gate(name: str, version: str) -> None:
    gate = (registry.client().get_model_version(name, str(version)).tags or {}).get("shoprec.gate")
    if gate != "True":
        raise CanaryFailed(f"{name} v{version} did not pass its evaluation gate (shoprec.gate={gate}); not promoted")


def promote(deployment: dict, max_error_rate: float = 0.01, api=None, smoke_requests: int = 5,
            ready_timeout_s: float = 300.0, poll_s: float = 5.0, token: str | None = None) -> dict:
    """Promote what :func:`deploy` rolled out (its returned record) once its checks pass, else roll it back."""
    name, version = deployment["model_name"], deployment["version"]
    _check_gate(name, version)
    ranker, ranker_version = deployment.get("ranker_name"), deployment.get("ranker_version")
    ranker_champion = registry.version_by_alias(ranker, CHAMPION) if ranker and ranker_version else None
    if ranker_version and (ranker_champion is None or str(ranker_champion.version) != str(ranker_version)):
        _check_gate(ranker, ranker_version)
    if deployment["target"] == "local":
        moves = move_champions(deployment, "promoted by the retrain pipeline: gate passed (local target)")
        return {"promoted": True, "checks": {"gate": True}, "moves": moves,
                "decision": f"{name}@champion -> v{version}"}
    if deployment["target"] != "kserve":
        raise ValueError(f"unknown deploy target {deployment['target']!r}: use 'local' or 'kserve'")
    api = api or k8s.custom_objects_api()
    ns, svc = deployment["namespace"], deployment["service"]
    obj = k8s.wait_ready(api, ns, svc, ready_timeout_s, poll_s)
    served, _ = k8s.served_uris(obj)
    if served != deployment["model_uri"]:
        raise k8s.RolloutError(f"InferenceService {ns}/{svc} serves {served}, not {deployment['model_uri']} that "
                               "deploy rolled out: another rollout replaced it; not promoting")
    try:
        checks = canary_checks(k8s.canary_url(obj), version, max_error_rate,
                               token=os.environ.get(TOKEN_ENV, "") if token is None else token,
                               smoke_requests=smoke_requests)
    except CanaryFailed as e:
        rollback_canary(api, deployment, str(e), ready_timeout_s, poll_s)
        raise
    body = k8s.owned_fields(svc, ns, deployment["model_uri"], version, deployment["ranker_uri"], canary_percent=None,
                            previous_uri=deployment.get("previous_model_uri", ""),
                            previous_ranker_uri=deployment.get("previous_ranker_uri", ""))
    k8s.apply_owned_fields(api, body)
    k8s.wait_ready(api, ns, svc, ready_timeout_s, poll_s)
    reason = f"canary passed: {checks['requests']} requests, error rate {checks['error_rate']}"
    moves = move_champions(deployment, reason)
    registry.client().set_model_version_tag(name, version, "shoprec.canary", f"passed: {reason}")
    log.info("promote: %s v%s has all traffic and is @champion (%s)", name, version, reason)
    return {"promoted": True, "checks": checks, "moves": moves, "decision": f"{name}@champion -> v{version}: {reason}"}


def rollback_canary(api, deployment: dict, why: str, ready_timeout_s: float = 300.0, poll_s: float = 5.0) -> None:
    """Traffic back to the previous pinned version; @champion untouched, @challenger stays; raises CanaryFailed."""
    name, version = deployment["model_name"], deployment["version"]
    ns, svc = deployment["namespace"], deployment["service"]
    previous = deployment.get("previous_model_uri", "")
    try:
        registry.client().set_model_version_tag(name, version, "shoprec.canary", f"failed: {why}"[:5000])
    except Exception as e:  # noqa: BLE001 (the rollback matters more than the tag)
        log.warning("could not tag %s v%s with the canary result: %s", name, version, e)
    if not previous:
        raise CanaryFailed(f"canary of {deployment['model_uri']} failed: {why}; there is no previous version to roll "
                           f"back to, so {ns}/{svc} still serves it")
    # canaryTrafficPercent 0: KServe sends all traffic to the last rolled-out revision (the previous version)
    # at once, while the spec names that version again.
    body = k8s.owned_fields(svc, ns, previous, version_of(previous), deployment.get("previous_ranker_uri", ""),
                            canary_percent=0)
    k8s.apply_owned_fields(api, body)
    k8s.wait_ready(api, ns, svc, ready_timeout_s, poll_s)
    champion = registry.version_by_alias(name, CHAMPION)
    raise CanaryFailed(f"canary of {deployment['model_uri']} failed: {why}; rolled back {ns}/{svc} to {previous}; "
                       f"@champion still {('v' + str(champion.version)) if champion else 'none'}, "
                       f"v{version} stays @challenger")


# ------------------------------------------------------------------ by hand (shoprec models promote/rollback)
def pin(model_name: str, version: str, target: str, namespace: str = "shoprec", service: str | None = None,
        out: str | Path | None = None, ready_timeout_s: float = 600.0, poll_s: float = 5.0, api=None) -> dict:
    """Serve ``models:/model_name/version`` with all traffic on ``target``, keeping the ranker it serves now."""
    uri = pinned_uri(model_name, version)
    if target == "local":
        path = local_pointer(model_name, out)
        current = json.loads(path.read_text()) if path.exists() else {}
        return _deploy_local({"target": "local", "model_name": model_name, "version": str(version), "model_uri": uri,
                              "ranker_name": current.get("ranker_name", ""),
                              "ranker_version": current.get("ranker_version", ""),
                              "ranker_uri": current.get("ranker_uri", ""), "at": _now()}, out)
    if target != "kserve":
        raise ValueError(f"unknown target {target!r}: use 'local' or 'kserve'")
    api = api or k8s.custom_objects_api()
    svc = service or model_name
    live = k8s.get_inference_service(api, namespace, svc)
    if live is None:
        raise k8s.RolloutError(f"no InferenceService {namespace}/{svc} to pin: run the pipeline's deploy or apply "
                               "manifests/ first")
    previous_uri, ranker_uri = k8s.served_uris(live)
    k8s.apply_owned_fields(api, k8s.owned_fields(svc, namespace, uri, version, ranker_uri, canary_percent=None,
                                                 previous_uri=previous_uri if previous_uri != uri else ""))
    obj = k8s.wait_ready(api, namespace, svc, ready_timeout_s, poll_s)
    return {"target": "kserve", "namespace": namespace, "service": svc, "model_uri": uri, "ranker_uri": ranker_uri,
            "previous_model_uri": previous_uri, "generation": obj["metadata"].get("generation")}
