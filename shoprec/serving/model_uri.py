"""Where a served model comes from: a folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` in MLflow."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def resolve_model(uri: str) -> tuple[Path, str, str]:
    """A local model folder for ``uri`` (a folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``)."""
    if uri.startswith("models:/"):
        from shoprec.registry.versions import download_model_dir

        name, alias = parse_models_uri(uri)
        found = download_model_dir(name, alias)
        if found is None:
            raise RuntimeError(f"no model version at {uri} in {os.environ.get('MLFLOW_TRACKING_URI', 'the local store')}")
        folder, version = found
        return folder, name, version
    folder = Path(uri)
    from shoprec.seqrec.model import ENSEMBLE_FILE

    if not any((folder / f).exists() for f in ("model.safetensors", ENSEMBLE_FILE)):
        raise RuntimeError(f"{uri} is neither a models:/ URI nor a model folder with model.safetensors "
                           "(or an ensemble's ensemble.json)")
    return folder, folder.name, "local"


def model_created_at(uri: str, folder: Path, name: str, version: str) -> float:
    """When the served version was made, Unix seconds: its registry creation time for a ``models:/`` URI,
    else the newest mtime of the folder's weights (``model.safetensors`` or an ensemble's ``ensemble.json``)."""
    if uri.startswith("models:/") and version.isdigit():
        from shoprec.registry.versions import client

        return client().get_model_version(name, version).creation_timestamp / 1000
    from shoprec.seqrec.model import ENSEMBLE_FILE

    return max((folder / f).stat().st_mtime for f in ("model.safetensors", ENSEMBLE_FILE) if (folder / f).exists())


def parse_models_uri(uri: str) -> tuple[str, str]:
    ref = uri[len("models:/"):]
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, alias = ref.partition("/")
    return name, alias
