"""Where shoprec's container images live.

Images (built by ``make images``, see images/ and mk/images.mk), one version tag for all:

- base    ``$REGISTRY/shoprec:$VERSION``          every pipeline step (CPU torch); the components' base_image
- trainer ``$REGISTRY/shoprec-trainer:$VERSION``  DDP training on GPUs (CUDA torch); TrainJobs
- server  ``$REGISTRY/shoprec-server:$VERSION``   ``shoprec serve``; the InferenceService's predictor
- mlflow  ``$REGISTRY/shoprec-mlflow:$VERSION``   the MLflow tracking server of manifests/

``REGISTRY`` is ``SHOPREC_IMAGE_REGISTRY`` (default ``ghcr.io/shoprec``), ``VERSION`` is
``SHOPREC_IMAGE_TAG`` (default the package version). A whole reference can be forced per image with
``SHOPREC_IMAGE``, ``SHOPREC_TRAINER_IMAGE`` or ``SHOPREC_SERVER_IMAGE`` (the names components/ and
shoprec.pipeline.trainjob already read). The environment is read at call time, so a compile picks up the
setting of the shell that runs it, and the cluster pipeline copies :func:`image_env` (resolved at compile
time) onto every task, so the TrainJob and InferenceService a step creates use the same images.
"""

from __future__ import annotations

import os

from shoprec import __version__

IMAGE_REGISTRY = "ghcr.io/shoprec"
VERSION = __version__


def registry() -> str:
    return os.environ.get("SHOPREC_IMAGE_REGISTRY", IMAGE_REGISTRY).rstrip("/")


def version() -> str:
    return os.environ.get("SHOPREC_IMAGE_TAG", VERSION)


def _image(name: str, override: str) -> str:
    return os.environ.get(override) or f"{registry()}/{name}:{version()}"


def base_image() -> str:
    return _image("shoprec", "SHOPREC_IMAGE")


def trainer_image() -> str:
    return _image("shoprec-trainer", "SHOPREC_TRAINER_IMAGE")


def server_image() -> str:
    return _image("shoprec-server", "SHOPREC_SERVER_IMAGE")


def mlflow_image() -> str:
    """The tracking server of manifests/ (MLflow with the PostgreSQL driver)."""
    return _image("shoprec-mlflow", "SHOPREC_MLFLOW_IMAGE")


def image_env() -> dict[str, str]:
    """The image settings resolved now (at compile time), as env for the pipeline's tasks."""
    return {"SHOPREC_IMAGE_REGISTRY": registry(), "SHOPREC_IMAGE_TAG": version(), "SHOPREC_IMAGE": base_image(),
            "SHOPREC_TRAINER_IMAGE": trainer_image(), "SHOPREC_SERVER_IMAGE": server_image()}
