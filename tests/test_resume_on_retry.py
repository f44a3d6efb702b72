"""A retried train step resumes from the checkpoint it stored in S3, under kfp.local.

The train component runs as a subprocess (kfp.local's SubprocessRunner, as shoprec.pipeline.runner runs it),
torchrun with 2 gloo workers inside it, against a real moto S3 server process. The first attempt is stopped
after its first epoch the way a deleted pod is (SHOPREC_FAULT_KILL_AFTER_EPOCH: the torchrun agent gets
SIGTERM); the second attempt gets the same run key in a fresh output folder, like a retry in a new pod.
"""

import json
from pathlib import Path

import pytest
import torch
from kfp import dsl, local
from kfp.dsl import Dataset, Model

from components.train import train
from shoprec.data.storage import s3_client
from shoprec.trainer.checkpoints import CheckpointStore, checkpoint_uri, root_for

RECIPE = json.dumps({"batch_size": 32, "lr": 3e-3, "patience": 50, "threads": 1, "seed": 3,
                     "model": {"objective": "sasrec", "loss": "sampled_softmax", "n_negatives": 32, "max_len": 20,
                               "d_model": 32, "n_heads": 2, "n_layers": 1, "emb_norm": True}})
EPOCHS = 3
BUCKET = "artifacts"


@dsl.pipeline(name="train-step")
def train_step(features_uri: str, recipe: str, epochs: int, run_key: str) -> Model:
    features = dsl.importer(artifact_uri=features_uri, artifact_class=Dataset)
    return train(features=features.output, recipe=recipe, epochs=epochs, workers=2, nodes=1,
                 kfp_run_id=run_key).outputs["model"]


def run_step(tmp_path: Path, features: Path, run_key: str, name: str) -> Path:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / name),
               raise_on_error=True)
    task = train_step(features_uri=str(features), recipe=RECIPE, epochs=EPOCHS, run_key=run_key)
    return Path(task.output.path)


@pytest.fixture
def store_root(s3_env, monkeypatch):
    s3_client().create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("SHOPREC_CHECKPOINT_ROOT", f"s3://{BUCKET}/shoprec-checkpoints")
    yield f"s3://{BUCKET}/shoprec-checkpoints"
    client = s3_client()
    for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=o["Key"])
    client.delete_bucket(Bucket=BUCKET)


def stored_keys(prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_a_retried_train_step_resumes_from_its_stored_checkpoint(tiny_features, tmp_path, store_root, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the killed attempt's work folder stays in tmp_path
    run_key = "run-0001"
    prefix = f"shoprec-checkpoints/{run_key}/train/"

    # attempt 1: stopped after epoch 0 is checkpointed and stored
    monkeypatch.setenv("SHOPREC_FAULT_KILL_AFTER_EPOCH", "0")
    with pytest.raises(RuntimeError):
        run_step(tmp_path, tiny_features, run_key, "attempt-1")
    monkeypatch.delenv("SHOPREC_FAULT_KILL_AFTER_EPOCH")
    assert stored_keys(prefix) == [prefix + "best/config.json", prefix + "best/model.safetensors",
                                   prefix + "last.pt"]
    CheckpointStore(f"{store_root}/{run_key}/train").restore(tmp_path / "stored-after-1")
    state = torch.load(tmp_path / "stored-after-1" / "last.pt", weights_only=True)["state"]
    assert state["epoch"] == 0 and len(state["history"]) == 1  # attempt 1 ran (and stored) epoch 0 only

    # attempt 2: same run key, a fresh output folder (a new pod): it continues with epoch 1
    resumed_dir = run_step(tmp_path, tiny_features, run_key, "attempt-2")
    resumed = json.loads((resumed_dir / "metrics.json").read_text())
    assert resumed["epochs_this_attempt"] == list(range(1, EPOCHS))
    assert state["history"][0].items() <= resumed["history"][0].items()  # epoch 0 is the stored one, not redone
    assert not (resumed_dir / "checkpoints").exists() and not list(resumed_dir.rglob("*.pt"))

    # an uninterrupted run with no checkpoint store (the setting removed): the same result
    monkeypatch.delenv("SHOPREC_CHECKPOINT_ROOT")
    straight_dir = run_step(tmp_path, tiny_features, "run-0002", "straight")
    straight = json.loads((straight_dir / "metrics.json").read_text())
    assert straight["epochs_this_attempt"] == list(range(EPOCHS))
    assert stored_keys("shoprec-checkpoints/run-0002/") == []
    assert not (straight_dir / "checkpoints").exists()
    figures = {"attempt_1_epochs": [0], "attempt_2_epochs": resumed["epochs_this_attempt"],
               "uninterrupted_epochs": straight["epochs_this_attempt"],
               **{f"{split}_ndcg@10_{how}": run[split]["ndcg@10"] for split in ("valid", "test")
                  for how, run in (("resumed", resumed), ("uninterrupted", straight))}}
    print(json.dumps(figures))
    for split in ("valid", "test"):
        a, b = resumed[split]["ndcg@10"], straight[split]["ndcg@10"]
        assert abs(a - b) <= 0.02 * b, (split, a, b)


def test_the_store_location_comes_from_parameter_env_or_artifact_bucket(monkeypatch):
    monkeypatch.delenv("SHOPREC_CHECKPOINT_ROOT", raising=False)
    assert root_for("/tmp/kfp-local/train/model") == ""  # local: nothing changes
    assert root_for("minio://mlpipeline/v2/artifacts/x/model") == "s3://mlpipeline/shoprec-checkpoints"
    assert root_for("/tmp/m", "s3://b/ckpt/") == "s3://b/ckpt"
    monkeypatch.setenv("SHOPREC_CHECKPOINT_ROOT", "s3://env/c")
    assert root_for("minio://mlpipeline/x") == "s3://env/c"
    assert checkpoint_uri("s3://env/c", "run-1", "train") == "s3://env/c/run-1/train"
    assert checkpoint_uri("", "run-1", "train") == ""
    with pytest.raises(ValueError, match="s3://"):
        root_for("/tmp/m", "/local/folder")
    with pytest.raises(ValueError, match="run id"):
        checkpoint_uri("s3://env/c", "", "train")


def test_an_unreachable_store_is_an_error_naming_it(tmp_path, monkeypatch):
    from shoprec.data.storage import StorageError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = CheckpointStore("s3://artifacts/shoprec-checkpoints/run-1/train")
    with pytest.raises(StorageError, match="cannot restore checkpoints from s3://artifacts/shoprec-checkpoints/run-1/"
                                           "train at http://127.0.0.1:9"):
        store.restore(tmp_path / "ckpt")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"x")
    assert store.save(tmp_path / "ckpt") == 0  # training goes on; logged, retried at the next epoch
