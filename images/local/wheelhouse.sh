#!/usr/bin/env bash
# Fill images/wheelhouse with a wheel for everything the images install (torch 2.13.0's CPU build, the pins
# of images/requirements*.txt, the MLflow image's extras, and the build backend), using this machine's pip
# configuration, so that image builds need no network and resolve the same files every time.
#
#   images/local/wheelhouse.sh [PYTHON]     # PYTHON: a Python 3.11 with pip (default .venv/bin/python)
#
# Skips the download when the folder already holds what requirements.txt names (a stamp of its hash; FORCE=1 redoes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
OUT=images/wheelhouse
STAMP=$OUT/.stamp
EXTRA="torch==2.13.0 psycopg2-binary==2.9.13 wheel==0.45.1"
want=$(cat images/requirements.txt images/requirements-serve.txt <(echo "$EXTRA") | sha256sum | cut -c1-16)
if [[ -z "${FORCE:-}" && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then echo "wheelhouse up to date" >&2; exit 0; fi
[[ -n "${FORCE:-}" ]] && rm -f "$OUT"/*.whl "$STAMP"
# pip wheel: downloads wheels as they are and builds one for any source-only pin.
"$PY" -m pip wheel -q --wheel-dir "$OUT" -r images/requirements-serve.txt $EXTRA
echo "$want" > "$STAMP"
echo "wheelhouse: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1)" >&2
