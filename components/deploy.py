from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(model_name: str, version: str, target: str, ranker_name: str) -> str:
    """Point the serving target (local server or KServe) at the new champion."""
    import json

    from shoprec.deploy import deploy as run_deploy

    record = run_deploy(model_name, version, target=target, ranker_name=ranker_name)
    return json.dumps({k: v for k, v in record.items() if k != "manifest"})
