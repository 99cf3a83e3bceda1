#!/usr/bin/env bash
# Source me: starts a private Docker engine and makes the local Python base image exist on it
# (`mlops images base`: no image registry is reachable). Exports DOCKER_HOST and
# MLOPS_TEST_BASE_IMAGE. At exit it stops only the dockerd it started, unmounts and removes its folder.
# The base image's root file system is cached in MLOPS_CACHE_DIR (default ~/.cache/mlops), so
# reruns import it in seconds instead of running debootstrap (~46 s).
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

# Always a folder of our own: an engine found in a reused folder is not ours to adopt or kill.
MLOPS_DOCKER_DIR="$(mktemp -d /tmp/mlops-docker.XXXXXX)"
export DOCKER_HOST="unix://${MLOPS_DOCKER_DIR}/docker.sock"
dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
  --data-root "${MLOPS_DOCKER_DIR}/data" --exec-root "${MLOPS_DOCKER_DIR}/exec" \
  --pidfile "${MLOPS_DOCKER_DIR}/docker.pid" --host "${DOCKER_HOST}" \
  > "${MLOPS_DOCKER_DIR}/dockerd.log" 2>&1 &
MLOPS_DOCKERD_PID=$!

stop_docker() {
  if kill -0 "${MLOPS_DOCKERD_PID}" 2>/dev/null; then
    kill "${MLOPS_DOCKERD_PID}"
    for _ in $(seq 1 60); do kill -0 "${MLOPS_DOCKERD_PID}" 2>/dev/null || break; sleep 0.5; done
  fi
  # overlay and shm mounts the engine left under its folder, deepest first
  grep -o " ${MLOPS_DOCKER_DIR}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "${MLOPS_DOCKER_DIR}"
}
trap stop_docker EXIT

for _ in $(seq 1 60); do
  kill -0 "${MLOPS_DOCKERD_PID}" 2>/dev/null || { tail -20 "${MLOPS_DOCKER_DIR}/dockerd.log"; exit 1; }
  docker info >/dev/null 2>&1 && break
  sleep 0.5
done
if ! kill -0 "${MLOPS_DOCKERD_PID}" 2>/dev/null || ! docker info >/dev/null 2>&1; then
  tail -20 "${MLOPS_DOCKER_DIR}/dockerd.log"
  exit 1
fi

MLOPS_TEST_BASE_IMAGE="$(python3 -m pipeline.cli.main images base)"
export MLOPS_TEST_BASE_IMAGE
