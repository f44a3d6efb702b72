# The MLflow tracking server of manifests/base/mlflow.yaml: the mlflow and boto3 that shoprec pins
# (images/requirements.txt is the constraint file) plus the PostgreSQL driver, which MLflow's own image lacks.
#   docker buildx build -f images/mlflow.Dockerfile -t ghcr.io/shoprec/shoprec-mlflow:0.1.0 .
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a build needs no image from a
# registry but its base (BuildKit: docker buildx build, or DOCKER_BUILDKIT=1 docker build).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# Where pip finds packages (see base.Dockerfile).
ARG PIP_OPTIONS=""
RUN python -m venv /opt/venv
COPY images/requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir $PIP_OPTIONS -c /tmp/requirements.txt mlflow==3.17.2 boto3==1.44.8 psycopg2-binary==2.9.13 \
    && python -c "import mlflow, boto3, psycopg2"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shoprec-mlflow" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
RUN ! command -v gcc && ! command -v cc && mlflow --version
# The commit the image was built from: a label for registries, an env var for shoprec.registry.versions to tag MLflow runs.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV SHOPREC_GIT_COMMIT="${GIT_COMMIT}"
WORKDIR /home/mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
