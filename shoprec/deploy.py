"""Point a serving target at the champion.

- ``local``: writes ``$SHOPREC_HOME/deployments/<name>.json`` naming the model URI and version that
  ``shoprec serve`` (and ``make demo``) serve; the URI is the alias, so a restarted server picks up
  the current champion.
- ``kserve``: renders a KServe InferenceService for the champion and applies it with the kubernetes
  client when a cluster is configured (in-cluster or kubeconfig); otherwise it only writes the YAML.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import yaml

from shoprec.registry import shoprec_home

log = logging.getLogger(__name__)


def deploy(model_name: str, version: str, target: str = "local", out: str | Path | None = None,
           namespace: str = "shoprec", ranker_name: str = "") -> dict:
    uri = f"models:/{model_name}@champion"
    ranker_uri = f"models:/{ranker_name}@champion" if ranker_name else ""
    if target == "local":
        path = Path(out) if out else shoprec_home() / "deployments" / f"{model_name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"target": "local", "model_uri": uri, "version": str(version),
                  "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "ranker_uri": ranker_uri,
                  "serve": f"shoprec serve --model {uri}" + (f" --ranker {ranker_uri}" if ranker_uri else "")}
        path.write_text(json.dumps(record, indent=2))
        log.info("deploy: local server now serves %s (v%s); pointer in %s", uri, version, path)
        return record
    if target == "kserve":
        from shoprec import k8s

        manifest = k8s.render_inference_service(model_name, uri, namespace=namespace)
        manifest.setdefault("metadata", {}).setdefault("annotations", {})["shoprec/model-version"] = str(version)
        text = yaml.safe_dump(manifest, sort_keys=False)
        if out:
            Path(out).write_text(text)
        applied = False
        try:
            k8s.apply_inference_service(manifest, namespace)
            applied = True
        except k8s.NoClusterError as e:
            log.warning("deploy: no Kubernetes cluster configured (%s); rendered the InferenceService only", e)
        return {"target": "kserve", "model_uri": uri, "version": str(version), "applied": applied, "manifest": manifest}
    raise ValueError(f"unknown deploy target {target!r}: use 'local' or 'kserve'")
