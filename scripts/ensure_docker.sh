#!/usr/bin/env bash
# Makes sure a Docker engine answers. If none does and we are root on Debian/Ubuntu: install Debian's
# docker.io and start dockerd in the background, waiting for its socket. Otherwise say what to do.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "error: DOCKER_HOST=$DOCKER_HOST is set but the engine there does not answer (docker info failed)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no Docker engine answers. Install and start Docker (https://docs.docker.com/engine/install/)," >&2
  echo "       or point DOCKER_HOST at one, then run this again." >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "[setup] installing Debian's docker.io" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
log=/var/log/iquest-dockerd.log
echo "[setup] starting dockerd in the background (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "error: dockerd did not answer within 60 s; last lines of $log:" >&2
tail -20 "$log" >&2
exit 1
