# A local stand-in for PyTorch's own image (pytorch/pytorch), for building the trainer image where no image
# registry can be reached: a Python 3.11 base with the CPU build of torch 2.13.0 in /opt/venv, on PATH, so the
# trainer Dockerfile builds on it unchanged (make images-local builds it as shoprec-local/torch-cpu:2.13.0).
#   DOCKER_BUILDKIT=1 docker build -f images/local/torch-cpu.Dockerfile --build-arg PYTHON_IMAGE=... \
#     --build-arg PIP_OPTIONS="--no-index --find-links /wheelhouse" -t shoprec-local/torch-cpu:2.13.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG PIP_OPTIONS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    python -m venv /opt/venv \
    && pip install --no-cache-dir $PIP_OPTIONS "torch==2.13.0+cpu" \
    && python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0'"
