from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_shard(model: Input[Model], features: Input[Dataset], shard: int, shards: int, model_name: str,
                   part: Output[Artifact]):
    """Counts per rank of the candidate, popularity and the current @champion on one share of the test shoppers."""
    from shoprec.evaluate import evaluate_shard as run_shard
    from shoprec.registry.versions import download_model_dir

    champion = download_model_dir(model_name, "champion")
    result = run_shard(model.path, features.path, shard, shards, part.path, champion=champion[0] if champion else None,
                       champion_version=champion[1] if champion else None)
    part.metadata.update({"shard": shard, "users": result["users"], "champion_version": result["champion_version"]})
