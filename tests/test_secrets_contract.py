"""Secrets as a checked contract: what every reader reads (the compiled cluster pipeline, manifests/,
the InferenceService shoprec.pipeline.k8s renders, the TrainJob) against what manifests/README.md documents and
creates. A required key the docs do not create, or a documented key nothing reads, fails here."""

import re
from pathlib import Path

import yaml

from shoprec.pipeline import k8s
from shoprec.pipeline.runner import compile_pipeline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "manifests" / "README.md"

Key = tuple[str, str]  # (secret, key)


def documented() -> dict[Key, bool]:
    """(secret, key) -> optional, from the table in manifests/README.md."""
    rows = re.findall(r"^\| `([\w-]+)` \| `([\w-]+)` \| (required|optional) \|", README.read_text(), re.M)
    assert rows, "manifests/README.md has no secrets table (| `secret` | `key` | required/optional | ...)"
    return {(s, k): flag == "optional" for s, k, flag in rows}


def created() -> set[Key]:
    """(secret, key) pairs the README's `kubectl create secret generic` commands create (comments left out)."""
    text = README.read_text()
    block = text[text.index("## Secrets"):]
    block = block[block.index("```sh"):]
    block = block[:block.index("```", 5)]
    out = set()
    for command in re.split(r"\n(?=kubectl )", "\n".join(line.split("#")[0] for line in block.splitlines())):
        m = re.search(r"create secret generic ([\w-]+)", command)
        if m:
            out |= {(m.group(1), key) for key in re.findall(r"--from-literal=([\w-]+)=", command)}
    return out


def _refs(obj, where: str, out: list) -> None:
    if isinstance(obj, dict):
        ref = obj.get("secretKeyRef")
        if ref:
            out.append(((ref["name"], ref["key"]), bool(ref.get("optional")), where))
        for v in obj.values():
            _refs(v, where, out)
    elif isinstance(obj, list):
        for v in obj:
            _refs(v, where, out)


def manifest_reads() -> list:
    out: list = []
    for f in sorted((ROOT / "manifests" / "base").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            _refs(doc, f"manifests/base/{f.name}", out)
    _refs(k8s.render_inference_service("x", "models:/x/1"), "shoprec.pipeline.k8s.render_inference_service", out)
    return out


def pipeline_reads(tmp_path) -> list:
    docs = list(yaml.safe_load_all(open(compile_pipeline(tmp_path / "c.yaml", cluster=True))))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return [((s["secretName"], e["secretKey"]), bool(s.get("optional")), f"compiled pipeline {name}")
            for name, ex in executors.items() for s in ex.get("secretAsEnv", []) for e in s["keyToEnv"]]


def trainjob_reads() -> list:
    from shoprec.pipeline import trainjob

    doc = trainjob.render_trainjob("t", "img", "s3://b/f", "s3://b/m", recipe="{}", epochs=1, nodes=2,
                                   gpus_per_node=1, secrets=trainjob.SECRET_ENV)
    out: list = []
    _refs(doc, "shoprec.pipeline.trainjob.render_trainjob", out)
    return out


def contract_errors(reads: list, docs: dict[Key, bool], made: set[Key]) -> list[str]:
    """What is wrong between the readers, the documented table and the create commands (empty: all agree)."""
    errors = []
    for key, optional, where in reads:
        if key not in docs:
            errors.append(f"{where} reads {key[0]}/{key[1]}, which manifests/README.md does not document")
        elif not optional and docs[key]:
            errors.append(f"{where} requires {key[0]}/{key[1]}, which manifests/README.md calls optional "
                          "(pods fail with CreateContainerConfigError when it is absent)")
        elif optional and not docs[key]:
            errors.append(f"{where} reads {key[0]}/{key[1]} as optional, which manifests/README.md calls required")
    read = {key for key, _, _ in reads}
    errors += [f"manifests/README.md documents {s}/{k}, which nothing reads" for s, k in sorted(set(docs) - read)]
    errors += [f"manifests/README.md's commands do not create required {s}/{k}" for (s, k), opt in sorted(docs.items())
               if not opt and (s, k) not in made]
    errors += [f"manifests/README.md's commands create {s}/{k}, which its table does not document"
               for s, k in sorted(made - set(docs))]
    return errors


def test_docs_commands_and_readers_agree(tmp_path):
    reads = manifest_reads() + pipeline_reads(tmp_path) + trainjob_reads()
    assert {where for _, _, where in reads} >= {"manifests/base/mlflow.yaml", "compiled pipeline exec-deploy",
                                                "shoprec.pipeline.k8s.render_inference_service",
                                                "shoprec.pipeline.trainjob.render_trainjob"}
    assert contract_errors(reads, documented(), created()) == []


def test_the_optional_keys_in_code_are_the_documented_ones():
    assert k8s.OPTIONAL_SECRET_KEYS == {key for key, optional in documented().items() if optional}


def test_the_contract_check_catches_each_kind_of_drift():
    docs = {("s3", "endpoint-url"): True, ("s3", "id"): False, ("m", "uri"): False}
    made = {("s3", "id"), ("m", "uri")}
    ok = [(("s3", "endpoint-url"), True, "a"), (("s3", "id"), False, "a"), (("m", "uri"), False, "b")]
    assert contract_errors(ok, docs, made) == []
    assert contract_errors([(("s3", "endpoint-url"), False, "a"), *ok[1:]], docs, made) == [
        "a requires s3/endpoint-url, which manifests/README.md calls optional (pods fail with "
        "CreateContainerConfigError when it is absent)"]
    assert contract_errors([*ok, (("m", "password"), False, "c")], docs, made) == [
        "c reads m/password, which manifests/README.md does not document"]
    assert contract_errors(ok[1:], docs, made) == ["manifests/README.md documents s3/endpoint-url, which nothing reads"]
    assert contract_errors(ok, docs, {("s3", "id")}) == ["manifests/README.md's commands do not create required m/uri"]
    assert contract_errors(ok, docs, made | {("m", "token")}) == [
        "manifests/README.md's commands create m/token, which its table does not document"]


def test_readme_parsing_finds_the_commands():
    made = created()
    assert ("shoprec-mlflow", "tracking-uri") in made and ("shoprec-s3", "endpoint-url") in made
    assert ("shoprec-mlflow", "username") not in made  # in a comment: optional, not created by default
