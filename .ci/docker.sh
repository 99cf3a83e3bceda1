#!/usr/bin/env bash
# Source me: starts a private Docker engine and builds a local Python base image from Debian
# packages (no image registry is reachable). Exports DOCKER_HOST and MLOPS_TEST_BASE_IMAGE, and
# stops the engine on exit. Idempotent within one run.
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

MLOPS_DOCKER_DIR="${MLOPS_DOCKER_DIR:-$(mktemp -d /tmp/mlops-docker.XXXXXX)}"
export DOCKER_HOST="unix://${MLOPS_DOCKER_DIR}/docker.sock"
dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
  --data-root "${MLOPS_DOCKER_DIR}/data" --exec-root "${MLOPS_DOCKER_DIR}/exec" \
  --pidfile "${MLOPS_DOCKER_DIR}/docker.pid" --host "${DOCKER_HOST}" \
  > "${MLOPS_DOCKER_DIR}/dockerd.log" 2>&1 &
stop_docker() { kill "$(cat "${MLOPS_DOCKER_DIR}/docker.pid" 2>/dev/null)" 2>/dev/null || true; }
trap stop_docker EXIT
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
docker info >/dev/null || { tail -20 "${MLOPS_DOCKER_DIR}/dockerd.log"; exit 1; }

# The Debian suite and mirror this machine already uses.
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
suite=$(. /etc/os-release && echo "${VERSION_CODENAME}")
export MLOPS_TEST_BASE_IMAGE="mlops-test-base:${suite}"
if ! docker image inspect "${MLOPS_TEST_BASE_IMAGE}" >/dev/null 2>&1; then
  rootfs="${MLOPS_DOCKER_DIR}/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "${suite}" "${rootfs}" "${mirror}" > "${MLOPS_DOCKER_DIR}/debootstrap.log" 2>&1 \
    || { tail -20 "${MLOPS_DOCKER_DIR}/debootstrap.log"; exit 1; }
  tar -C "${rootfs}" -c . | docker import - "${MLOPS_TEST_BASE_IMAGE}" >/dev/null
  rm -rf "${rootfs}"
fi
