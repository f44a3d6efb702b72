"""Run the retrain DAG with every step in its own container on this machine (kfp.local's DockerRunner).

Each task runs in the image its component names (``shoprec.pipeline.k8s``: ``$SHOPREC_IMAGE_REGISTRY/<name>:$SHOPREC_IMAGE_TAG``,
set from what ``make images-local`` built, ``.shoprec/images-local.json``), as the image's own user (uid 10001),
with host networking so it reaches the ``mlflow server`` and the S3 API on 127.0.0.1, and with nothing of the
repository or the host's virtualenv mounted: only the pipeline root (where kfp.local passes artifacts between
tasks) and a home folder for the steps (where the local deploy writes its pointer) are shared, at the same paths.

Used by :func:`shoprec.pipeline.runner.run_local` with ``runner="docker"`` (``shoprec pipeline run --local
--containers``). Docker is reached through ``DOCKER_HOST`` (``images/local/dockerd.sh start`` prints it).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from shoprec.pipeline.processes import stop  # SIGTERM by PID, then SIGKILL after 20 s

log = logging.getLogger(__name__)

# Variables a step needs from the caller's environment; nothing else of the host's environment is passed.
STEP_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
            "SHOPREC_DIST_TIMEOUT", "OMP_NUM_THREADS", "SHOPREC_IMAGE_REGISTRY", "SHOPREC_IMAGE_TAG")
IMAGES_FILE = "images-local.json"
# What a task's container ran, in order: {"task", "image", "exit_code"}; filled by _run_container.
ran: list[dict] = []


class ContainerRunError(RuntimeError):
    """The containerised run cannot start: no docker engine, no image, or an endpoint a container cannot reach."""


def built_images(home: Path) -> dict:
    """What ``images/local/build.sh`` last built (registry, tag, each image's ref, build seconds and size)."""
    path = home / IMAGES_FILE
    if not path.exists():
        raise ContainerRunError(f"no local images recorded in {path}: build them first with `make images-local`")
    return json.loads(path.read_text())


def use_built_images(home: Path) -> dict:
    """Point shoprec.pipeline.k8s (and so the components' base images) at the local build unless set already.

    Must run before ``pipelines.retrain`` is imported: a component's image is fixed when it is defined.
    """
    if os.environ.get("SHOPREC_IMAGE_REGISTRY") and os.environ.get("SHOPREC_IMAGE_TAG"):
        return {"registry": os.environ["SHOPREC_IMAGE_REGISTRY"], "tag": os.environ["SHOPREC_IMAGE_TAG"]}
    images = built_images(home)
    os.environ.setdefault("SHOPREC_IMAGE_REGISTRY", images["registry"])
    os.environ.setdefault("SHOPREC_IMAGE_TAG", images["tag"])
    return images


def docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as e:  # the SDK raises several types for "no engine"; all mean the same here
        raise ContainerRunError(f"no docker engine at {os.environ.get('DOCKER_HOST', 'the default socket')} ({e}); "
                                "start one with `images/local/dockerd.sh start` and export the DOCKER_HOST it prints") from e


def check_images_present(client, refs: list[str]) -> None:
    missing = []
    for ref in refs:
        try:
            client.images.get(ref)
        except Exception:
            missing.append(ref)
    if missing:
        raise ContainerRunError(f"image(s) not in the local engine: {', '.join(missing)}; run `make images-local`")


def check_reachable(data_uri: str, env: dict) -> None:
    """Containers share only the network: the data must be on S3 and MLflow a server, not a local path."""
    if not data_uri.startswith("s3://"):
        raise ContainerRunError(f"--containers reads raw data from s3:// only (a container does not see {data_uri!r}); "
                                "upload it, e.g. to moto's or MinIO's S3 API, and set AWS_ENDPOINT_URL")
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if urlparse(uri).scheme not in ("http", "https"):
        raise ContainerRunError(f"--containers needs an MLflow tracking server (MLFLOW_TRACKING_URI=http://...), "
                                f"not {uri or 'the embedded SQLite store'}: start `mlflow server` and point at it")


def step_env(step_home: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in STEP_ENV if os.environ.get(k)}
    env.update(SHOPREC_HOME=str(step_home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def shared_folder(path: Path) -> Path:
    """A folder host and containers both write: the steps run as uid 10001, the host usually as someone else."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    return path


def docker_runner(step_home: Path, env: dict[str, str]):
    """kfp.local's DockerRunner with host networking, the steps' home mounted, and a /dev/shm for gloo."""
    from docker.types import Mount
    from kfp import local

    _fix_exit_codes()
    return local.DockerRunner(network_mode="host", environment=env, shm_size="1g",
                              mounts=[Mount(target=str(step_home), source=str(step_home), type="bind")])


def _task_name(command: list[str]) -> str:
    """The task a container runs, from the output file in its executor input (pipeline_root/run/TASK/...)."""
    try:
        executor_input = json.loads(command[command.index("--executor_input") + 1])
        return Path(executor_input["outputs"]["outputFile"]).parent.name
    except (ValueError, IndexError, KeyError):
        return "?"


def _run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """kfp.local's run_docker_container without auto-removal: kfp 2.17 runs containers with auto_remove and
    reports exit code 0 when the container is already gone by the time it asks, so a failed step could pass."""
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, **run_args)
    try:
        for line in container.logs(stream=True):
            print(line.decode(errors="replace"), end="")
        code = int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)
    ran.append({"task": _task_name(command), "image": image, "exit_code": code})
    log.info("container %s (%s) exited with %d", ran[-1]["task"], image, code)
    return code


def _fix_exit_codes() -> None:
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = _run_container


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], url: str, log_path: Path, timeout: float = 120.0):
    """Start a server process and wait until ``url`` answers; the process is returned (stop it with stop)."""
    import subprocess
    import sys
    import time

    import httpx

    out = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, *cmd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ContainerRunError(f"{cmd[:2]} exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise ContainerRunError(f"{cmd[:2]} did not answer at {url} within {timeout:.0f} s; see {log_path}")


class local_services:  # noqa: N801 (used as a context manager, like contextlib's)
    """An ``mlflow server`` (SQLite + served artifacts under ``home/containers``) and moto's S3 API on 127.0.0.1,
    for a containerised run on a laptop; each only when its variable (MLFLOW_TRACKING_URI with http, or
    AWS_ENDPOINT_URL) is not set already. A local ``data_uri`` folder is uploaded to the S3 API. On exit both
    are stopped by PID and the environment is restored. ``self.data_uri`` is what the steps read."""

    def __init__(self, home: Path, data_uri: str):
        self.home, self.data_uri, self.procs, self.saved = home / "containers", data_uri, [], {}

    def _set(self, **env: str) -> None:
        for k, v in env.items():
            self.saved.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def __enter__(self) -> local_services:
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            if urlparse(os.environ.get("MLFLOW_TRACKING_URI", "")).scheme not in ("http", "https"):
                port = _free_port()
                self.procs.append(_start(["-m", "mlflow", "server", "--backend-store-uri",
                                          f"sqlite:///{self.home / 'mlflow.db'}", "--artifacts-destination",
                                          (self.home / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port",
                                          str(port), "--workers", "1"], f"http://127.0.0.1:{port}/health",
                                         self.home / "mlflow-server.log"))
                self._set(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
                log.info("started mlflow server at %s (pid %d)", os.environ["MLFLOW_TRACKING_URI"], self.procs[-1].pid)
            if not self.data_uri.startswith("s3://"):
                self._upload()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _upload(self) -> None:
        from shoprec.data.storage import s3_client, upload_folder

        if not os.environ.get("AWS_ENDPOINT_URL"):
            port = _free_port()
            self.procs.append(_start(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     f"http://127.0.0.1:{port}/", self.home / "moto.log"))
            self._set(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="local",
                      AWS_SECRET_ACCESS_KEY="local", AWS_DEFAULT_REGION="us-east-1")
            log.info("started moto's S3 API at %s (pid %d)", os.environ["AWS_ENDPOINT_URL"], self.procs[-1].pid)
        s3 = s3_client()
        if "shoprec-raw" not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket="shoprec-raw")
        target = f"s3://shoprec-raw/{Path(self.data_uri).name}"
        upload_folder(Path(self.data_uri), target)
        log.info("uploaded %s to %s", self.data_uri, target)
        self.data_uri = target

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
