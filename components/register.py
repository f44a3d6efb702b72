from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(model: Input[Model], evaluation: Input[Artifact], model_name: str, kfp_run_id: str,
             data_snapshot: str, kind: str) -> NamedTuple("Outputs", version=str, gate_passed=bool, decision=str):
    """Log the run to MLflow and register a version as @challenger (@champion moves only in promote)."""
    import json
    from collections import namedtuple

    from shoprec.registry.versions import register as run_register

    result = run_register(model.path, evaluation.path, model_name, kfp_run_id=kfp_run_id,
                          data_snapshot=json.loads(data_snapshot), kind=kind)
    return namedtuple("Outputs", ["version", "gate_passed", "decision"])(
        result["version"], result["gate_passed"], f"{result['decision']}: {result['reason']}")
