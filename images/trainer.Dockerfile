# The training image (DDP on GPUs; the TrainJob's and the cluster train step's image,
# shoprec.images.trainer_image()): PyTorch's own CUDA runtime image, whose torch is the CUDA build of
# 2.13.0, plus shoprec with the same pins as the other images (images/requirements.txt).
#   docker buildx build -f images/trainer.Dockerfile -t ghcr.io/shoprec/shoprec-trainer:0.1.0 .
# TORCH_IMAGE picks the CUDA line (torch 2.13.0 is built for CUDA 12.6, 12.9, 13.0 and 13.2); 12.6 runs on
# the widest range of drivers. The build fails if that image's torch is not 2.13.0 with CUDA.
# A CPU variant for local runs (make images-local): TORCH_IMAGE=shoprec-local/torch-cpu:2.13.0 (images/local/torch-cpu.Dockerfile)
# and REQUIRE_CUDA=0. No `# syntax=` line: the builder's own frontend is used, so nothing else is pulled.
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

FROM ${TORCH_IMAGE}
ARG REQUIRE_CUDA=1
# Where pip finds packages (see base.Dockerfile); torch is the image's own and stays.
ARG PIP_OPTIONS=""
LABEL org.opencontainers.image.title="shoprec-trainer" \
      org.opencontainers.image.description="shoprec DDP trainer (CUDA)" \
      org.opencontainers.image.source="https://github.com/shoprec/shoprec"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHOPREC_HOME=/home/shoprec/.shoprec
COPY images/requirements.txt /tmp/requirements.txt
# The constraint keeps pip from replacing the image's CUDA torch with a wheel from PyPI.
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    python -c "import torch; v = torch.__version__; assert v.split('+')[0] == '2.13.0' and (torch.version.cuda or '$REQUIRE_CUDA' == '0'), v" \
    && echo "torch==2.13.0" > /tmp/constraints.txt \
    && pip install --no-cache-dir $PIP_OPTIONS -c /tmp/constraints.txt -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY shoprec /src/shoprec
COPY components /src/components
COPY pipelines /src/pipelines
COPY configs /opt/shoprec/configs
# /src is shoprec itself (its pins are installed above): DL3013 reads $PIP_OPTIONS as an unpinned package.
# hadolint ignore=DL3013
RUN --mount=type=bind,source=images/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir $PIP_OPTIONS --no-deps /src \
    && rm -rf /src /tmp/requirements.txt /tmp/constraints.txt \
    && python -c "import shoprec.seqrec.train, torch; assert torch.__version__.split('+')[0] == '2.13.0' and (torch.version.cuda or '$REQUIRE_CUDA' == '0')" \
    && groupadd --gid 10001 shoprec \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/shoprec --shell /usr/sbin/nologin shoprec
# The commit the image was built from: a label for registries, an env var for shoprec.registry.versions to tag MLflow runs.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV SHOPREC_GIT_COMMIT="${GIT_COMMIT}"
WORKDIR /home/shoprec
USER 10001:10001
CMD ["torchrun", "--help"]
