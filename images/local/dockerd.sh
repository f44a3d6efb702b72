#!/usr/bin/env bash
# A docker engine for the local image builds and container runs, on machines where none is running.
#
#   images/local/dockerd.sh start    # prints the DOCKER_HOST to use; reuses a running engine
#   images/local/dockerd.sh stop     # stops only the engine this script started (by its pidfile's PID)
#   images/local/dockerd.sh host     # the DOCKER_HOST of the engine in use (empty: docker's default socket)
#
# Needs root and Debian's docker.io (apt-get install -y docker.io). Everything lives under $SHOPREC_DOCKER_DIR
# (default /var/lib/shoprec-docker: image layers outlive one clone, so builds reuse their cache) and the
# socket and pidfile under /run/shoprec-docker. No bridge, no iptables: containers use host networking.
set -euo pipefail
DATA=${SHOPREC_DOCKER_DIR:-/var/lib/shoprec-docker}
RUN=${SHOPREC_DOCKER_RUN:-/run/shoprec-docker}
SOCK=unix://$RUN/docker.sock
PIDFILE=$RUN/dockerd.pid
CLIENT=${DOCKER:-docker}

answers() { DOCKER_HOST=$1 timeout 10 "$CLIENT" info >/dev/null 2>&1; }

host() {
  if [[ -n "${DOCKER_HOST:-}" ]] && answers "$DOCKER_HOST"; then echo "$DOCKER_HOST"; return; fi
  if answers "$SOCK"; then echo "$SOCK"; return; fi
  if answers unix:///var/run/docker.sock; then echo unix:///var/run/docker.sock; return; fi
  return 1
}

start() {
  if host; then return; fi
  command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install -y docker.io" >&2; exit 1; }
  mkdir -p "$DATA/data" "$RUN/exec"
  # setsid: the engine must outlive this script (and make's shell) until `stop`.
  setsid dockerd --storage-driver=overlay2 --iptables=false --bridge=none --ip-forward=false --ip-masq=false \
    --data-root "$DATA/data" --exec-root "$RUN/exec" --pidfile "$PIDFILE" --host "$SOCK" \
    >"$DATA/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do
    if answers "$SOCK"; then echo "$SOCK"; return; fi
    sleep 1
  done
  echo "dockerd did not answer on $SOCK within 60 s; its log:" >&2
  tail -20 "$DATA/dockerd.log" >&2
  exit 1
}

stop() {
  [[ -f "$PIDFILE" ]] || { echo "no engine started by this script (no $PIDFILE)" >&2; return 0; }
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  # network namespaces the engine leaves mounted under its exec-root
  for ns in "$RUN"/exec/netns/*; do [[ -e "$ns" ]] && umount "$ns" 2>/dev/null || true; done
  rm -f "$PIDFILE"
  echo "stopped dockerd (pid $pid)" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  host) host ;;
  *) echo "usage: $0 start|stop|host" >&2; exit 2 ;;
esac
