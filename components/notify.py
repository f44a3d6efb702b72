from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def notify(webhook_url: str, model_name: str, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """The exit step: post the run's outcome (failed, promoted, kept, canary rolled back) to the webhook."""
    from shoprec.pipeline.notify import notify as run_notify

    return run_notify(webhook_url, status.state, status.error_message or "", model_name, kfp_run_id)["text"]
