#!/usr/bin/env bash
# Build every image here, offline: the Debian base (debootstrap, once), the wheelhouse (once per pin set), then
# base, server, MLflow and the CPU variant of the trainer from the same Dockerfiles a cluster build uses.
#
#   images/local/build.sh               # or: make images-local
#   NO_CACHE=1 images/local/build.sh    # a cold build: Debian base and wheelhouse made again, no layer cache
#
# Tags: $REGISTRY/<name>:<version>-<git sha> (REGISTRY default shoprec-local; "-dirty" when the tree has
# uncommitted changes). The tag is printed last, and written with each image's build seconds and size to
# .shoprec/images-local.json. Components find the images with SHOPREC_IMAGE_REGISTRY=$REGISTRY and
# SHOPREC_IMAGE_TAG=<that tag> (shoprec.images), which `shoprec pipeline run --local --containers` sets.
set -euo pipefail
cd "$(dirname "$0")/../.."
REGISTRY=${REGISTRY:-shoprec-local}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' shoprec/__init__.py)
SHA=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain -- shoprec components pipelines configs images pyproject.toml 2>/dev/null)" ]]; then
  SHA=$SHA-dirty
fi
TAG=${SHOPREC_IMAGE_TAG:-$VERSION-$SHA}
DEBIAN=$REGISTRY/debian:bookworm
TORCH=$REGISTRY/torch-cpu:2.13.0
export DOCKER_HOST=${DOCKER_HOST:-$(images/local/dockerd.sh start)}
# BuildKit builds: `docker buildx build --load` where the buildx plugin exists, else the engine's own
# BuildKit through DOCKER_BUILDKIT=1 (the Debian docker.io client; newer clients without buildx refuse it).
CLIENT=${DOCKER:-docker}
if "$CLIENT" buildx version >/dev/null 2>&1; then BUILD=("$CLIENT" buildx build --load)
elif [[ -x /usr/bin/docker ]]; then CLIENT=/usr/bin/docker; BUILD=(env DOCKER_BUILDKIT=1 "$CLIENT" build)
else BUILD=(env DOCKER_BUILDKIT=1 "$CLIENT" build); fi
export DOCKER=$CLIENT

t0=$SECONDS
FORCE=${NO_CACHE:-} images/local/debian-base.sh "$DEBIAN"
t1=$SECONDS
FORCE=${NO_CACHE:-} images/local/wheelhouse.sh
t2=$SECONDS
# --network none: nothing is fetched during a build (and the engine runs without a bridge network).
COMMON=(--build-arg "PYTHON_IMAGE=$DEBIAN" --build-arg "PIP_OPTIONS=--no-index --find-links /wheelhouse"
        --network none --build-arg "GIT_COMMIT=$SHA" --label "org.opencontainers.image.version=$VERSION" --progress=plain)
[[ -n "${NO_CACHE:-}" ]] && COMMON+=(--no-cache)
mkdir -p .shoprec
RESULTS=.shoprec/images-local.json.tmp
echo "{\"tag\": \"$TAG\", \"registry\": \"$REGISTRY\", \"git_commit\": \"$SHA\", \"no_cache\": ${NO_CACHE:-0}, \
  \"debian_base_seconds\": $((t1 - t0)), \"wheelhouse_seconds\": $((t2 - t1)), \"images\": {" > "$RESULTS"
sep=""
build() {  # name dockerfile ref [extra build args]
  local name=$1 file=$2 ref=$3; shift 3
  local t0=$SECONDS
  echo "=== building $ref from $file" >&2
  "${BUILD[@]}" -f "$file" -t "$ref" "${COMMON[@]}" "$@" . >"$LOGDIR/$name.log" 2>&1 \
    || { tail -40 "$LOGDIR/$name.log" >&2; echo "building $ref failed; whole log: $LOGDIR/$name.log" >&2; exit 1; }
  local size
  size=$("$CLIENT" image inspect -f '{{.Size}}' "$ref")
  echo "    $ref: $((SECONDS - t0)) s, $((size / 1000000)) MB" >&2
  printf '%s"%s": {"ref": "%s", "build_seconds": %d, "size_bytes": %d}' "$sep" "$name" "$ref" $((SECONDS - t0)) "$size" >> "$RESULTS"
  sep=", "
}
LOGDIR=.shoprec/image-logs
mkdir -p "$LOGDIR"
build torch-cpu images/local/torch-cpu.Dockerfile "$TORCH"
build base images/base.Dockerfile "$REGISTRY/shoprec:$TAG"
build server images/server.Dockerfile "$REGISTRY/shoprec-server:$TAG"
build mlflow images/mlflow.Dockerfile "$REGISTRY/shoprec-mlflow:$TAG"
build trainer images/trainer.Dockerfile "$REGISTRY/shoprec-trainer:$TAG" --build-arg "TORCH_IMAGE=$TORCH" \
  --build-arg REQUIRE_CUDA=0
echo "}}" >> "$RESULTS"
mv "$RESULTS" .shoprec/images-local.json
echo "$TAG"
