# syntax=docker/dockerfile:1.7
# The MLflow tracking server of manifests/base/mlflow.yaml: the mlflow and boto3 that shoprec pins
# (images/requirements.txt is the constraint file) plus the PostgreSQL driver, which MLflow's own image lacks.
#   docker buildx build -f images/mlflow.Dockerfile -t ghcr.io/shoprec/shoprec-mlflow:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY images/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -c /tmp/requirements.txt mlflow==3.17.2 boto3==1.44.8 psycopg2-binary==2.9.13 \
    && python -c "import mlflow, boto3, psycopg2"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="shoprec-mlflow" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
RUN ! command -v gcc && ! command -v cc && mlflow --version
WORKDIR /home/mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
