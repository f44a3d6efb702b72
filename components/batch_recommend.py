from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_plan(features: Input[Dataset], model_name: str, version: str, shards: int, date: str) -> list[str]:
    """Split the window's shoppers into shards by a stable hash of user_id; pins the model version (empty: the
    @champion's now) and the date (empty: today, UTC). One JSON spec per shard for the fan-out."""
    import json

    from shoprec.registry.versions import version_by_alias
    from shoprec.seqrec.batch import plan_batch

    if not version:
        champion = version_by_alias(model_name)
        if champion is None:
            raise RuntimeError(f"{model_name} has no @champion to make the night's recommendations with")
        version = str(champion.version)
    return [json.dumps(spec) for spec in plan_batch(features.path, shards, model_name, version, date)]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_shard(features: Input[Dataset], spec: str, k: int, recs: Output[Dataset]):
    """Top-k unseen items for one shard's shoppers with the pinned version, as Parquet (see shoprec.seqrec.batch)."""
    import json

    from shoprec.registry.versions import download_model_dir
    from shoprec.seqrec.batch import batch_recommend_shard

    s = json.loads(spec)
    model_dir, version = download_model_dir(s["model_name"], s["version"])
    info = batch_recommend_shard(model_dir, features.path, s["shard"], s["shards"], k, recs.path,
                                 model_name=s["model_name"], model_version=version, date=s["date"])
    recs.metadata.update({key: info[key] for key in ("shard", "shards", "shoppers", "rows", "version", "date")})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_commit(parts: Input[list[Dataset]], data_uri: str, dest_uri: str, redis_url: str, metrics: Output[Metrics],
                 store_ttl_s: int = 2 * 86400) -> str:
    """Write the shards under DEST/date=D/version=N/ (DEST: dest_uri, or data_uri/recommendations when empty),
    replacing an earlier run of the same (date, version); then load Redis when a URL is given (redis_url, else
    SHOPREC_REC_STORE_URL). Returns the manifest as JSON."""
    import json
    import os

    from shoprec.seqrec.batch import commit_batch, default_dest, load_into_store

    paths = [p.path for p in parts]
    manifest = commit_batch(paths, dest_uri or default_dest(data_uri))
    url = redis_url or os.environ.get("SHOPREC_REC_STORE_URL", "")
    manifest["store"] = load_into_store(paths, url, ttl_s=store_ttl_s) if url else 0
    for key in ("shoppers", "rows", "shards", "store"):
        metrics.log_metric(key, manifest[key])
    return json.dumps(manifest)
