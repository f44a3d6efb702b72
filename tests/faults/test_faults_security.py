"""Security scans (fast, part of the default suite):

- no secrets baked into images/ or manifests/ (credentials, private keys, tokens, Kubernetes Secret objects
  with values, env vars holding a literal secret); skipped where the folders do not exist yet;
- model weights are loaded without unpickling: in shoprec/, every ``torch.load`` passes ``weights_only=True``
  and nothing calls ``pickle.load(s)``, ``joblib.load``, ``dill``/``cloudpickle``, ``np.load(allow_pickle=True)``,
  ``torch.jit.load`` or ``mlflow.pytorch.load_model`` (found through the AST, so comments and strings don't count).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.faults.conftest import REPO, record

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@$]+:(?!\$)[^\s:/@]{3,}@"),
    "literal secret assignment": re.compile(
        r"(?i)\b(aws_secret_access_key|secret_access_key|password|passwd|api[_-]?key|api[_-]?token|auth[_-]?token|"
        r"client[_-]?secret)\b\s*[:=]\s*[\"']?(?![\"']?\$)(?!\{\{)([A-Za-z0-9/+_\-]{8,})"),
}
# values that are obviously not secrets (placeholders, references, local test credentials)
ALLOWED_VALUES = re.compile(r"(?i)^(changeme|change-me|placeholder|example|testing|secretKeyRef|valueFrom|"
                            r"REPLACE[_A-Z]*|your[_-].*|x{4,}|\*+|none|null|true|false)$")


def _files(folder: Path):
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.stat().st_size < 5_000_000 and ".git" not in p.parts:
            try:
                yield p, p.read_text(errors="strict")
            except UnicodeDecodeError:
                continue


def scan_secrets(folder: Path) -> list[str]:
    found = []
    for path, text in _files(folder):
        for lineno, line in enumerate(text.split("\n"), start=1):
            for what, pat in SECRET_PATTERNS.items():
                for m in pat.finditer(line):
                    value = m.group(m.lastindex) if m.lastindex else m.group(0)
                    if what == "literal secret assignment" and ALLOWED_VALUES.match(value):
                        continue
                    found.append(f"{path.relative_to(folder.parent)}:{lineno}: {what}")
        if path.suffix in (".yaml", ".yml"):
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError:
                continue
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                    found.append(f"{path.relative_to(folder.parent)}: Kubernetes Secret {doc.get('metadata', {}).get('name')} "
                                 "with values")
    return found


@pytest.mark.parametrize("folder", ["images", "manifests"])
def test_no_secrets_baked_in(folder):
    root = REPO / folder
    if not root.is_dir():
        pytest.skip(f"{folder}/ does not exist yet")
    n_files = sum(1 for _ in _files(root))
    found = scan_secrets(root)
    record(f"security_secrets_{folder}", files_scanned=n_files, findings=len(found), lost=0)
    assert not found, "\n".join(found)


def test_scanner_finds_planted_secrets(tmp_path):
    """The scanner is not vacuous: each kind of planted secret is reported, placeholders are not."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2hunter2}\n")
    (tmp_path / "m" / "Dockerfile").write_text(
        "ENV AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP\nENV AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCY\n"
        "ENV MLFLOW_TRACKING_URI=postgresql://mlflow:s3cr3tpass@db:5432/mlflow\n"
        "ENV API_TOKEN=${API_TOKEN}\nENV PASSWORD=changeme\n")
    found = scan_secrets(tmp_path / "m")
    kinds = sorted({f.split(": ", 1)[1].split(" ", 1)[0] for f in found})
    assert any("Kubernetes Secret" in f for f in found)
    assert any("AWS access key id" in f for f in found)
    assert any("URL with a password" in f for f in found)
    assert sum("literal secret assignment" in f for f in found) == 2, found  # the key and the Secret's value
    assert len(kinds) >= 3


UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("joblib", "load"), ("dill", "load"),
    ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"), ("jit", "load"),
    ("pytorch", "load_model"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def scan_unsafe_loads(root: Path) -> tuple[list[str], int]:
    problems, torch_loads = [], 0
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            parts = name.split(".")
            where = f"{path.relative_to(root.parent)}:{node.lineno}: {name}"
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if name.endswith("torch.load"):
                torch_loads += 1
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    problems.append(f"{where} without weights_only=True")
            elif len(parts) >= 2 and tuple(parts[-2:]) in UNSAFE_CALLS:
                problems.append(f"{where} unpickles")
            elif parts[-1] == "load" and parts[0] in ("np", "numpy"):
                a = kw.get("allow_pickle")
                if isinstance(a, ast.Constant) and a.value is True:
                    problems.append(f"{where} with allow_pickle=True")
        for node in ast.walk(tree):  # `from pickle import load` and friends
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "cloudpickle", "joblib"):
                if any(a.name in ("load", "loads") for a in node.names):
                    problems.append(f"{path.relative_to(root.parent)}:{node.lineno}: from {node.module} import load")
    return problems, torch_loads


def test_weights_are_never_unpickled():
    problems, torch_loads = scan_unsafe_loads(REPO / "shoprec")
    record("security_no_unpickling", files_scanned=len(list((REPO / "shoprec").rglob("*.py"))),
           torch_load_calls=torch_loads, findings=len(problems), lost=0)
    assert not problems, "\n".join(problems)


def test_unpickling_scanner_is_not_vacuous(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import torch, pickle, joblib, numpy as np\nfrom pickle import loads\n"
        "torch.load('a')\ntorch.load('b', weights_only=False)\ntorch.load('c', weights_only=True)\n"
        "pickle.load(open('d','rb'))\njoblib.load('e')\nnp.load('f', allow_pickle=True)\nnp.load('g')\n"
        "# torch.load('in a comment')\ns = \"pickle.load(x)\"\n")
    problems, torch_loads = scan_unsafe_loads(pkg)
    assert torch_loads == 3
    assert len(problems) == 6, problems  # a, b, pickle, joblib, allow_pickle, from-import
