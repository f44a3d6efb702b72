from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def batch_plan(features: Input[Dataset], model_name: str, version: str, shards: int, date: str) -> list[str]:
    """Split the window's shoppers into shards by a stable hash of user_id; pins the model version (empty: the
    @champion's now) and the date (empty: today, UTC). One JSON spec per shard for the fan-out."""
    import json

    from shoprec.seqrec.batch import pinned_version, plan_batch

    specs = plan_batch(features.path, shards, model_name, pinned_version(model_name, version), date)
    return [json.dumps(spec) for spec in specs]


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

    from shoprec.seqrec.batch import commit_night

    manifest = commit_night([p.path for p in parts], data_uri, dest_uri, redis_url, ttl_s=store_ttl_s)
    for key in ("shoppers", "rows", "shards", "store"):
        metrics.log_metric(key, manifest[key])
    return json.dumps(manifest)
