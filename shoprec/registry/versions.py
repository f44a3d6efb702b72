"""MLflow tracking and registry: one run per pipeline run, versions, and the champion/challenger aliases.

MLflow stages are deprecated, so promotion is done with aliases: every registered version gets
``challenger``; ``champion`` moves only after the version passed its evaluation gate *and* its canary
(the pipeline's ``promote`` step, :func:`shoprec.pipeline.deploy.promote`), or by hand (:func:`promote`). Aliases keep no
history of their own, so every move is also written as a registered-model tag
``shoprec.history.NNNN`` = JSON {alias, version, previous, reason, by, at}.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set (an ``mlflow server`` in a cluster or a test),
otherwise an embedded SQLite store under ``$SHOPREC_HOME`` (default ``.shoprec/``) that
``mlflow ui --backend-store-uri sqlite:///.shoprec/mlflow.db`` opens.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

EXPERIMENT = "shoprec"
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "shoprec.history."
KFP_RUN_TAG = "shoprec.kfp_run_id"
MODEL_NAME_TAG = "shoprec.model_name"


class RegistryError(RuntimeError):
    pass


def shoprec_home() -> Path:
    return Path(os.environ.get("SHOPREC_HOME", ".shoprec")).resolve()


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = shoprec_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def client():
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(c) -> str:
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = (shoprec_home() / "mlartifacts").as_uri()
    return c.create_experiment(EXPERIMENT, artifact_location=location)


def _git_commit() -> str:
    """The commit of the code that runs: an image's baked-in SHOPREC_GIT_COMMIT first, else the checkout's HEAD."""
    if os.environ.get("SHOPREC_GIT_COMMIT"):
        return os.environ["SHOPREC_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version_by_alias(name: str, alias: str = CHAMPION):
    """The model version holding ``alias``, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "not found" in str(e).lower():
            return None
        raise


def download_model_dir(name: str, alias_or_version: str = CHAMPION, dst: str | Path | None = None) -> tuple[Path, str] | None:
    """Local folder with the shoprec model files of ``models:/name@alias`` (or ``/version``), and its version."""
    import mlflow

    client()  # points mlflow at the tracking and registry URI
    if alias_or_version.isdigit():
        version = alias_or_version
    else:
        mv = version_by_alias(name, alias_or_version)
        if mv is None:
            return None
        version = mv.version
    dst = Path(dst or tempfile.mkdtemp(prefix=f"shoprec-{name}-v{version}-"))
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst))
    return Path(local) / "artifacts" / "model_dir", str(version)


def record_alias(name: str, alias: str, version: str, reason: str, by: str | None = None,
                 action: str = "move") -> dict:
    """Move ``alias`` to ``version`` and append the move to the model's history tags.

    ``action`` is ``move`` (pipeline or promote) or ``rollback`` (undoes the latest move, see :func:`rollback`).
    """
    c = client()
    previous = version_by_alias(name, alias)
    c.set_registered_model_alias(name, alias, str(version))
    entry = {"alias": alias, "version": str(version), "previous": str(previous.version) if previous else None,
             "reason": reason, "by": by or os.environ.get("SHOPREC_USER") or getpass.getuser(),
             "at": datetime.now(UTC).isoformat(timespec="seconds"), "action": action}
    tags = c.get_registered_model(name).tags
    n = sum(1 for k in tags if k.startswith(HISTORY_TAG))
    c.set_registered_model_tag(name, f"{HISTORY_TAG}{n:05d}", json.dumps(entry))
    log.info("%s@%s -> v%s (was %s): %s", name, alias, version, entry["previous"], reason)
    return entry


def alias_history(name: str) -> list[dict]:
    tags = client().get_registered_model(name).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(HISTORY_TAG)]


def _model_version(name: str, version: str):
    from mlflow.exceptions import MlflowException

    c = client()
    _model_version_check(name)
    try:
        return c.get_model_version(name, str(version))
    except MlflowException as e:
        raise RegistryError(f"model {name!r} has no version {version!r}") from e


def list_versions(name: str) -> list[dict]:
    """Every version of ``name``, newest first: aliases, gate, evaluation metrics, run and creation time."""
    c = client()
    rm = _model_version_check(name)
    aliases: dict[str, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        aliases.setdefault(str(v), []).append(alias)
    out = []
    for mv in c.search_model_versions(f"name='{name}'"):
        tags = mv.tags or {}
        try:
            evaluation = json.loads(tags.get("shoprec.evaluation", "{}"))
        except json.JSONDecodeError:
            evaluation = {}
        out.append({"name": name, "version": str(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
                    "gate": tags.get("shoprec.gate"), "evaluation": evaluation, "run_id": mv.run_id,
                    "kfp_run_id": tags.get(KFP_RUN_TAG, ""), "reason": tags.get("shoprec.reason", ""),
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                        timespec="seconds") if mv.creation_timestamp else None})
    return sorted(out, key=lambda r: -int(r["version"]))


def list_models() -> list[str]:
    return sorted(m.name for m in client().search_registered_models())


def promote(name: str, version: str, reason: str = "", force: bool = False, by: str | None = None) -> dict:
    """Move ``champion`` to ``version`` by hand; only a version that passed evaluation unless ``force``."""
    reason = check_promotable(name, version, reason, force)
    return record_alias(name, CHAMPION, str(version), reason, by=by)


def check_promotable(name: str, version: str, reason: str = "", force: bool = False) -> str:
    """Raise :class:`RegistryError` unless ``version`` may become champion; the reason to record."""
    mv = _model_version(name, version)
    gate = (mv.tags or {}).get("shoprec.gate")
    if gate != "True" and not force:
        why = "failed its evaluation gate" if gate == "False" else "has no evaluation (tag shoprec.gate)"
        raise RegistryError(f"{name} v{version} {why}; use --force to promote it anyway")
    champ = version_by_alias(name, CHAMPION)
    if champ is not None and str(champ.version) == str(version):
        raise RegistryError(f"{name} v{version} is already the champion")
    return reason or ("promoted by hand" + (" (forced past the gate)" if gate != "True" else ""))


def champion_lineage(name: str) -> list[str]:
    """The champion versions as a stack: moves push, rollbacks pop; the last is the champion now."""
    stack: list[str] = []
    for e in alias_history(name):
        if e.get("alias") != CHAMPION:
            continue
        if e.get("action") == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != e["version"]:
                stack.append(e["version"])
        else:
            stack.append(e["version"])
    return stack


def rollback(name: str, reason: str = "", by: str | None = None) -> dict:
    """Move ``champion`` back to the version it held before the latest move (rollbacks are undone in turn)."""
    current, target = rollback_target(name)
    return record_alias(name, CHAMPION, target, reason or f"rollback from v{current}", by=by, action="rollback")


def rollback_target(name: str) -> tuple[str, str]:
    """(champion now, the version :func:`rollback` would move it to); RegistryError when there is none."""
    _model_version_check(name)
    champ = version_by_alias(name, CHAMPION)
    stack = champion_lineage(name)
    if champ is None:
        raise RegistryError(f"{name} has no champion to roll back")
    if stack and stack[-1] != str(champ.version):  # moved outside shoprec: treat the current one as the top
        stack.append(str(champ.version))
    previous = [v for v in stack[:-1] if v != str(champ.version)]
    if not previous:
        raise RegistryError(f"{name} has no earlier champion than v{champ.version} in its alias history")
    target = previous[-1]
    _model_version(name, target)
    return str(champ.version), target


def _model_version_check(name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_registered_model(name)
    except MlflowException as e:
        raise RegistryError(f"no registered model {name!r} in {tracking_uri()}") from e


def metric_key(name: str) -> str:
    """MLflow metric names may not contain '@': ndcg@10 is logged as ndcg_at_10."""
    return name.replace("@", "_at_")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _unreachable(e: Exception) -> bool:
    text = str(e)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                   "Failed to establish a new connection", "Read timed out"))


def register(model_dir: str | Path, evaluation_dir: str | Path, name: str, kfp_run_id: str = "",
             data_snapshot: dict | None = None, kind: str = "seqrec") -> dict:
    """Log the run and register a version with alias ``challenger``; the gate result is its ``shoprec.gate`` tag.

    ``champion`` does not move here: a version becomes champion only after its canary passed
    (:func:`shoprec.pipeline.deploy.promote`). Returns the version and ``gate_passed``.

    Idempotent for a KFP run id: registering the same pipeline run again returns the version it made,
    and a run left half-done by an outage is resumed, not duplicated. MLflow's client retries each
    request with exponential backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR``);
    when that gives up, the error names the tracking server.
    """
    from mlflow.exceptions import MlflowException

    try:
        return _register(model_dir, evaluation_dir, name, kfp_run_id, data_snapshot, kind)
    except (MlflowException, OSError) as e:
        if _unreachable(e):
            raise RegistryError(f"MLflow tracking server at {tracking_uri()} unreachable after retries while "
                                f"registering {name}: {str(e)[:300]}") from e
        raise


def _register(model_dir: str | Path, evaluation_dir: str | Path, name: str, kfp_run_id: str = "",
              data_snapshot: dict | None = None, kind: str = "seqrec") -> dict:
    import mlflow

    model_dir, evaluation_dir = Path(model_dir), Path(evaluation_dir)
    evaluation = json.loads((evaluation_dir / "evaluation.json").read_text())
    summary = json.loads((model_dir / "metrics.json").read_text())
    c = client()
    exp = experiment_id(c)
    resume_run_id = None
    if kfp_run_id:
        # One KFP run registers several models (recommender, ranker): a run is keyed by both.
        existing = c.search_runs([exp], max_results=1, filter_string=(
            f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}' and tags.`{MODEL_NAME_TAG}` = '{name}'"))
        if existing:
            # A step that died after creating its run but before registering resumes that run.
            resume_run_id = existing[0].info.run_id
            versions = c.search_model_versions(f"name='{name}' and run_id='{existing[0].info.run_id}'")
            if versions:
                v = versions[0]
                log.info("register: KFP run %s already registered as %s v%s", kfp_run_id, name, v.version)
                if version_by_alias(name, CHALLENGER) is None:  # died between registering and the alias
                    record_alias(name, CHALLENGER, str(v.version), "registered by the retrain pipeline")
                return {"version": str(v.version), "run_id": v.run_id, "gate_passed": bool(evaluation["gate"]),
                        "decision": "already registered", "reason": evaluation["reason"]}
    champion = version_by_alias(name, CHAMPION)
    from shoprec.registry import model_record

    build = {"shoprec.git_commit": _git_commit(), **model_record.build_tags()}
    tags = {KFP_RUN_TAG: kfp_run_id, MODEL_NAME_TAG: name, **build,
            "shoprec.parent_champion": champion.version if champion else "none",
            "shoprec.gate": str(evaluation["gate"]), "shoprec.data_snapshot": json.dumps(data_snapshot or {})[:5000]}
    # System metrics (CPU, memory, disk, network; GPU with pynvml) sampled while the run is open.
    mlflow.set_system_metrics_sampling_interval(0.2)  # register takes about a second: sample often enough to log
    mlflow.set_system_metrics_samples_before_logging(1)
    with mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else exp,
                          run_name=None if resume_run_id else f"{kind}-{kfp_run_id or 'manual'}",
                          tags=tags, log_system_metrics=True) as run:
        params = _flatten(summary.get("config", {}))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for row in summary.get("history", []):
            mlflow.log_metrics({metric_key(k): v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        for who, res in evaluation["results"].items():
            mlflow.log_metrics({metric_key(f"{who}_{k}"): v for k, v in res.items() if k != "count"})
        mlflow.log_metrics({metric_key(k): v for k, v in _flatten(summary).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)
                            and not k.startswith(("config.", "history"))})
        for f in ("evaluation.json", "report.html", "report.md"):
            if (evaluation_dir / f).exists():
                mlflow.log_artifact(str(evaluation_dir / f), artifact_path="evaluation")
        with tempfile.TemporaryDirectory() as tmp:
            staged = stage_model_files(model_dir, Path(tmp) / "model_dir")
            # shoprec's code travels with the model (it is not on PyPI); its pinned dependencies are
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(__file__).resolve().parent.parent / PYFUNC[kind]),
                artifacts={"model_dir": str(staged)}, registered_model_name=name,
                pip_requirements=model_record.requirements(), code_paths=model_record.code_paths(),
                signature=model_record.signature(kind), input_example=model_record.input_example(kind, model_dir),
            )
        version = str(info.registered_model_version)
        for key, value in build.items():
            c.set_model_version_tag(name, version, key, value)
        card = model_record.model_card(name, version, kind, evaluation, summary, data_snapshot or {},
                                       build["shoprec.git_commit"], build["shoprec.image"])
        mlflow.log_text(card, "model_card.md")
        c.update_model_version(name, version, description=card[:5000])
        c.set_model_version_tag(name, version, "shoprec.gate", str(evaluation["gate"]))
        c.set_model_version_tag(name, version, "shoprec.evaluation", json.dumps(
            {k: evaluation["results"]["candidate"][k]
             for k in evaluation.get("key_metrics", ("ndcg@10", "hr@10", "mrr@10"))}))
        c.set_model_version_tag(name, version, KFP_RUN_TAG, kfp_run_id)
        c.set_model_version_tag(name, version, "shoprec.reason", evaluation["reason"][:5000])
    record_alias(name, CHALLENGER, version, "registered by the retrain pipeline")
    champ = f"champion v{champion.version}" if champion else "no champion yet"
    if evaluation["gate"]:
        decision = f"v{version} is challenger and passed its gate ({champ}): next, a canary"
    else:
        decision = f"v{version} is challenger and failed its gate; {champ} stays"
    log.info("register: %s (%s)", decision, evaluation["reason"])
    return {"version": version, "run_id": run.info.run_id, "gate_passed": bool(evaluation["gate"]),
            "decision": decision, "reason": evaluation["reason"]}


MODEL_FILES = ("model.safetensors", "config.json", "items.parquet", "histories.parquet", "metrics.json")
PYFUNC = {"seqrec": "seqrec/pyfunc.py", "ranker": "ranker/pyfunc.py"}  # under shoprec/
TRAINING_ONLY = ("checkpoints", "work")  # optimizer state and per-epoch checkpoints are not served


def stage_model_files(model_dir: Path, dst: Path) -> Path:
    """The files a served model needs, without training checkpoints (which hold optimizer state)."""
    import shutil

    shutil.copytree(model_dir, dst, ignore=shutil.ignore_patterns(*TRAINING_ONLY, "*.pt", ".*"))
    return dst


def _version() -> str:
    from shoprec import __version__

    return __version__
