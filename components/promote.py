from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote(deployment: str, max_error_rate: float, ready_timeout: int) -> str:
    """Check the canary deploy rolled out (Ready, smoke requests, 5xx rate from /metrics <= max_error_rate), then
    give it all traffic and move @champion; a failed canary is rolled back and this step fails saying why."""
    import json

    from shoprec.pipeline.deploy import promote as run_promote

    result = run_promote(json.loads(deployment), max_error_rate=max_error_rate, ready_timeout_s=ready_timeout)
    return result["decision"]
