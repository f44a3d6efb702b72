from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def shard_numbers(shards: int) -> list[int]:
    """0..shards-1: one features task and one evaluation task per shopper shard (at least one)."""
    from shoprec.data.shards import shard_numbers as numbers

    return numbers(shards)
