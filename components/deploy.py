from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(model_name: str, version: str, target: str, ranker_name: str, ranker_version: str, ranker_gate: bool,
           canary_percent: int, ready_timeout: int) -> str:
    """Roll out models:/model_name/version (pinned, never an alias): a KServe canary of canary_percent, or the
    local server pointer. Fails when it cannot apply or the service does not get Ready in ready_timeout s."""
    import json

    from shoprec.pipeline.deploy import deploy as run_deploy
    from shoprec.pipeline.deploy import ranker_to_serve

    record = run_deploy(model_name, version, target=target, ranker_name=ranker_name,
                        ranker_version=ranker_to_serve(ranker_name, ranker_version, ranker_gate),
                        canary_percent=canary_percent, ready_timeout_s=ready_timeout)
    return json.dumps(record)
