# syntax=docker/dockerfile:1.7
# The image every pipeline step runs in (the KFP components' base_image, shoprec.k8s.base_image()):
# shoprec with its pinned dependencies (images/requirements.txt) and the CPU build of torch 2.13.0.
# Build from the repository root (make images does):
#   docker buildx build -f images/base.Dockerfile -t ghcr.io/shoprec/shoprec:0.1.0 .
# Two stages: the final image gets the finished virtualenv only, no pip cache, no sources, no compiler.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY images/requirements.txt /tmp/requirements.txt
# One resolve: the CPU torch wheel (the +cpu build exists on the PyTorch index only) and the exact pins.
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" "torch==2.13.0+cpu" -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY shoprec /src/shoprec
COPY components /src/components
COPY pipelines /src/pipelines
# --no-deps: everything it needs is pinned above; the wheel build only fetches setuptools.
RUN pip install --no-cache-dir --no-deps /src \
    && python -c "import shoprec, torch; assert torch.__version__.startswith('2.13.0')"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shoprec" \
      org.opencontainers.image.description="shoprec pipeline steps (CPU)" \
      org.opencontainers.image.source="https://github.com/shoprec/shoprec"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHOPREC_HOME=/home/shoprec/.shoprec
RUN groupadd --gid 10001 shoprec \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/shoprec --shell /usr/sbin/nologin shoprec
COPY --from=build /opt/venv /opt/venv
COPY configs /opt/shoprec/configs
# No compiler may be left for anything to build with at run time.
RUN ! command -v gcc && ! command -v cc && shoprec --version
WORKDIR /home/shoprec
USER 10001:10001
CMD ["shoprec", "--help"]
