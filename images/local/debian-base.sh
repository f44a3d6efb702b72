#!/usr/bin/env bash
# The base image every local build starts from, made here because no image registry can be reached:
# Debian bookworm (the suite of python:3.11-slim-bookworm, so Python 3.11 like the images' default base)
# from the Debian mirror apt on this machine uses, with python3 and venv, imported into docker.
#
#   DOCKER_HOST=... images/local/debian-base.sh shoprec-local/debian:bookworm
#
# Skips all work when the tag exists (FORCE=1 makes it again). Needs root and debootstrap (apt-get install -y debootstrap).
set -euo pipefail
TAG=${1:-shoprec-local/debian:bookworm}
CLIENT=${DOCKER:-docker}
if [[ -z "${FORCE:-}" ]] && "$CLIENT" image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG exists" >&2; exit 0; fi
command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install -y debootstrap" >&2; exit 1; }
# The first deb822 or one-line source apt uses for bookworm.
MIRROR=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
  2>/dev/null | grep -E '^(URIs:|deb )' | grep -v security | grep -m1 debian | awk '{print $2}' || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/shoprec-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >&2
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "$CLIENT" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$TAG"
