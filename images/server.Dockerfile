# syntax=docker/dockerfile:1.7
# The model server (KServe custom predictor, shoprec.k8s.server_image()): shoprec with the `serve` extra
# (images/requirements-serve.txt) and the CPU build of torch 2.13.0, running `shoprec serve` on :8080.
#   docker buildx build -f images/server.Dockerfile -t ghcr.io/shoprec/shoprec-server:0.1.0 .
#   docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=... ghcr.io/shoprec/shoprec-server:0.1.0
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY images/requirements.txt images/requirements-serve.txt /tmp/
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" "torch==2.13.0+cpu" -r /tmp/requirements-serve.txt
COPY pyproject.toml README.md /src/
COPY shoprec /src/shoprec
COPY components /src/components
COPY pipelines /src/pipelines
RUN pip install --no-cache-dir --no-deps /src \
    && python -c "import fastapi, uvicorn, prometheus_client, shoprec.serve, torch"

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
COPY --from=build /opt/venv /opt/venv
RUN ! command -v gcc && ! command -v cc && shoprec serve --help > /dev/null
WORKDIR /home/shoprec
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2)"]
ENTRYPOINT ["shoprec"]
CMD ["serve", "--model", "models:/shoprec-seqrec@champion", "--host", "0.0.0.0", "--port", "8080"]
