"""Every pipeline step in its own container, measured: image builds (cold and warm), the retrain DAG in containers
vs as subprocesses on the same data and seed, and the server image run the way its pod runs it.

    DOCKER_HOST=$(images/local/dockerd.sh start) .venv/bin/python benchmarks/containers.py   # or: make containers-bench

writes benchmarks/results/containers.json (with this command). Needs root, a docker engine (images/local/dockerd.sh)
and debootstrap; about 25 minutes on 2 cores, most of it the cold build. ``--skip-cold`` measures the warm build only.
Both pipeline runs use one ``mlflow server`` and moto's S3 API on 127.0.0.1, each its own model name.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_images(no_cache: bool) -> dict:
    """images/local/build.sh once; its record (tag, per-image seconds and size) and the wall time."""
    t0 = time.perf_counter()
    env = {**os.environ, **({"NO_CACHE": "1"} if no_cache else {})}
    subprocess.run([str(ROOT / "images/local/build.sh")], check=True, env=env, cwd=ROOT)
    record = json.loads((ROOT / ".shoprec/images-local.json").read_text())
    return {**record, "wall_seconds": round(time.perf_counter() - t0, 1)}


def run_pipeline(runner: str, data_uri: str, model_name: str, home: Path, epochs: int) -> dict:
    """One retrain run in a fresh process (a component's image is fixed when the DAG module is imported)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--run-one", runner, "--data", data_uri, "--model-name", model_name,
           "--epochs", str(epochs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "SHOPREC_HOME": str(home)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": round(time.perf_counter() - t0, 1)}


def _run_one(runner: str, data_uri: str, model_name: str, epochs: int) -> None:
    from shoprec.pipeline import containers as container_runner
    from shoprec.pipeline.runner import run_local

    result = run_local(data_uri=data_uri, model_name=model_name, ranker_name=f"{model_name}-ranker", epochs=epochs,
                       runner=runner)
    result["containers"] = container_runner.ran
    print(json.dumps(result))


def pod_flags(manifest: dict) -> list[str]:
    """``docker run`` flags for the securityContext and emptyDirs of the InferenceService's predictor container."""
    predictor = manifest["spec"]["predictor"]
    container = predictor["containers"][0]
    pod_ctx, ctx = predictor.get("securityContext", {}), container.get("securityContext", {})
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid))
    flags = [f"--user={uid}:{gid}"]
    if ctx.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={c}" for c in ctx.get("capabilities", {}).get("drop", [])]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    empty_dirs = {v["name"] for v in predictor.get("volumes", []) if "emptyDir" in v}
    for m in container.get("volumeMounts", []):
        if m["name"] in empty_dirs:  # an emptyDir is writable by the pod's fsGroup: here by its uid
            flags.append(f"--tmpfs={m['mountPath']}:rw,uid={uid},gid={gid},mode=0770")
    return flags


def check_server_image(image: str, model_uri: str, ranker_uri: str | None, port: int, timeout: float = 240.0) -> dict:
    """Run the server image as its pod would (the manifest's securityContext, emptyDirs as tmpfs), serving
    ``model_uri`` from the MLflow registry; wait for /readyz and ask /v1/recommend and /v1/search."""
    from shoprec.pipeline import k8s

    manifest = k8s.render_inference_service("check", model_uri, image=image)
    name = f"shoprec-server-check-{port}"
    args = ["serve", "--model", model_uri, "--host", "127.0.0.1", "--port", str(port)]
    if ranker_uri:
        args += ["--ranker", ranker_uri]
    cmd = ["docker", "run", "-d", "--rm", f"--name={name}", "--network=host", *pod_flags(manifest),
           "-e", f"MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']}", "-e", "HOME=/home/shoprec",
           "-e", "HF_HUB_OFFLINE=1", image, *args]
    subprocess.run(cmd, check=True, capture_output=True)
    url, t0 = f"http://127.0.0.1:{port}", time.perf_counter()
    try:
        ready = None
        while time.perf_counter() - t0 < timeout:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        ready_seconds = round(time.perf_counter() - t0, 1)
        inspect = json.loads(subprocess.run(["docker", "inspect", name], check=True, capture_output=True,
                                            text=True).stdout)[0]
        uid = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True).stdout.strip()
        write_root = subprocess.run(["docker", "exec", name, "touch", "/opt/x"], capture_output=True, text=True)
        recommend = httpx.post(f"{url}/v1/recommend", json={"history": _some_items(url), "k": 5}, timeout=30)
        search = httpx.post(f"{url}/v1/search", json={"query": "running shoes", "k": 5}, timeout=30)
        return {
            "image": image, "model_uri": model_uri, "ranker_uri": ranker_uri, "docker_flags": pod_flags(manifest),
            "ready": ready is not None and ready.status_code == 200, "ready_seconds": ready_seconds,
            "read_only": bool(inspect["HostConfig"]["ReadonlyRootfs"]), "uid": int(uid) if uid.isdigit() else uid,
            "cap_drop": inspect["HostConfig"]["CapDrop"], "root_fs_write_refused": write_root.returncode != 0,
            "recommend": {"status": recommend.status_code, "items": len(recommend.json().get("items", []))},
            "search": {"status": search.status_code, "items": len(search.json().get("items", [])),
                       "retrievers": search.json().get("retrievers")},
        }
    finally:
        logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        if logs.returncode == 0 and os.environ.get("SHOPREC_CHECK_VERBOSE"):
            print(logs.stdout + logs.stderr, file=sys.stderr)


def _some_items(url: str) -> list[str]:
    """A few item ids the served model knows, from a search over its titles."""
    found = httpx.post(f"{url}/v1/search", json={"query": "running shoes", "k": 3}, timeout=30).json()
    return [it["item_id"] for it in found.get("items", [])] or ["unknown"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/containers.json"))
    p.add_argument("--skip-cold", action="store_true", help="no cold (no-cache) build")
    p.add_argument("--epochs", type=int, default=0, help="0: the built-in recipe's")
    p.add_argument("--run-one", choices=("subprocess", "docker"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model-name", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.run_one:
        _run_one(a.run_one, a.data, a.model_name, a.epochs)
        return

    from shoprec.data.synth import synthesize
    from shoprec.pipeline import containers as container_runner

    home = ROOT / ".shoprec/bench/containers"
    result: dict = {"command": " ".join(shlex.quote(x) for x in [".venv/bin/python", "benchmarks/containers.py",
                                                                   *sys.argv[1:]]),
                    "machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not a.skip_cold:
        result["build_cold"] = build_images(no_cache=True)
    result["build_warm"] = build_images(no_cache=False)
    images = result["build_warm"]
    os.environ["SHOPREC_IMAGE_REGISTRY"], os.environ["SHOPREC_IMAGE_TAG"] = images["registry"], images["tag"]
    data = home / "data"
    if not (data / "events").is_dir():
        synthesize(data)  # the built-in shop, default size and seed
    for k in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)
    with container_runner.local_services(home, str(data)) as services:
        runs = {runner: run_pipeline(runner, services.data_uri, f"bench-{runner}", home / runner, a.epochs)
                for runner in ("subprocess", "docker")}
        docker_run = runs["docker"]
        result["server_image"] = check_server_image(
            images["images"]["server"]["ref"], f"models:/bench-docker/{docker_run['registered_version']}",
            f"models:/bench-docker-ranker/{docker_run['ranker']['registered_version']}", port=_free_port())
    result["runner"] = "docker"
    result["tasks"] = docker_run.pop("containers")
    result["all_tasks_succeeded"] = bool(result["tasks"]) and all(t["exit_code"] == 0 for t in result["tasks"])
    result["pipelines"] = runs
    sub, dock = runs["subprocess"]["candidate"]["ndcg@10"], runs["docker"]["candidate"]["ndcg@10"]
    result["comparison"] = {
        "ndcg@10_subprocess": sub, "ndcg@10_docker": dock, "ndcg@10_difference": dock - sub,
        "wall_seconds_subprocess": runs["subprocess"]["wall_seconds"],
        "wall_seconds_docker": runs["docker"]["wall_seconds"],
        "wall_ratio_docker_over_subprocess": round(runs["docker"]["wall_seconds"] / runs["subprocess"]["wall_seconds"], 2),
    }
    result["image_sizes_mb"] = {k: round(v["size_bytes"] / 1e6) for k, v in images["images"].items()}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["comparison"], indent=2))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
