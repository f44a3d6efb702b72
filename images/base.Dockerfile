# The image every pipeline step runs in (the KFP components' base_image, shoprec.images.base_image()):
# shoprec with its pinned dependencies (images/requirements.txt) and the CPU build of torch 2.13.0.
# Build from the repository root (make images does):
#   docker buildx build -f images/base.Dockerfile -t ghcr.io/shoprec/shoprec:0.1.0 .
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a build needs no image from a
# registry but its base (BuildKit: docker buildx build, or DOCKER_BUILDKIT=1 docker build).
# Two stages: the final image gets the finished virtualenv only, no pip cache, no sources, no compiler.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
# Where pip finds packages. Default: the package index, plus the PyTorch index for the CPU torch build. A build
# without network (make images-local) passes "--no-index --find-links /wheelhouse" (images/wheelhouse, mounted).
ARG PIP_OPTIONS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY images/requirements.txt /tmp/requirements.txt
# One resolve: the CPU torch wheel (the +cpu build exists on the PyTorch index only) and the exact pins.
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir $PIP_OPTIONS "torch==2.13.0+cpu" -r /tmp/requirements.txt
# shoprec itself as a wheel, in a stage of its own: a code change rebuilds this small layer, not the dependencies'.
FROM deps AS build
COPY pyproject.toml README.md /src/
COPY shoprec /src/shoprec
COPY components /src/components
COPY pipelines /src/pipelines
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip wheel --no-cache-dir $PIP_OPTIONS --no-deps --wheel-dir /wheels /src

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
COPY --from=deps /opt/venv /opt/venv
# --no-deps: everything it needs is pinned in the layer above.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
    && python -c "import shoprec, torch; assert torch.__version__.startswith('2.13.0')"
COPY configs /opt/shoprec/configs
# No compiler may be left for anything to build with at run time.
RUN ! command -v gcc && ! command -v cc && shoprec --version
# The commit the image was built from: a label for registries, an env var for shoprec.registry.versions to tag MLflow runs.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV SHOPREC_GIT_COMMIT="${GIT_COMMIT}"
WORKDIR /home/shoprec
USER 10001:10001
CMD ["shoprec", "--help"]
