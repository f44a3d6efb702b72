# The model server (KServe custom predictor, shoprec.images.server_image()): shoprec with the `serve` extra
# (images/requirements-serve.txt) and the CPU build of torch 2.13.0, running `shoprec serve` on :8080.
#   docker buildx build -f images/server.Dockerfile -t ghcr.io/shoprec/shoprec-server:0.1.0 .
#   docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=... ghcr.io/shoprec/shoprec-server:0.1.0
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a build needs no image from a
# registry but its base (BuildKit: docker buildx build, or DOCKER_BUILDKIT=1 docker build).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
# Where pip finds packages. Default: the package index, plus the PyTorch index for the CPU torch build. A build
# without network (make images-local) passes "--no-index --find-links /wheelhouse" (images/wheelhouse, mounted).
ARG PIP_OPTIONS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY images/requirements.txt images/requirements-serve.txt /tmp/
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir $PIP_OPTIONS "torch==2.13.0+cpu" -r /tmp/requirements-serve.txt
# shoprec itself as a wheel, in a stage of its own: a code change rebuilds this small layer, not the dependencies'.
FROM deps AS build
COPY pyproject.toml README.md /src/
COPY shoprec /src/shoprec
COPY components /src/components
COPY pipelines /src/pipelines
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip wheel --no-cache-dir $PIP_OPTIONS --no-deps --wheel-dir /wheels /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shoprec-server" \
      org.opencontainers.image.description="shoprec model server (shoprec serve)" \
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
    && python -c "import fastapi, uvicorn, prometheus_client, shoprec.serving.app, torch"
RUN ! command -v gcc && ! command -v cc && shoprec serve --help > /dev/null
# The commit the image was built from: a label for registries, an env var for shoprec.registry.versions to tag MLflow runs.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV SHOPREC_GIT_COMMIT="${GIT_COMMIT}"
WORKDIR /home/shoprec
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2)"]
ENTRYPOINT ["shoprec"]
CMD ["serve", "--model", "models:/shoprec-seqrec@champion", "--host", "0.0.0.0", "--port", "8080"]
