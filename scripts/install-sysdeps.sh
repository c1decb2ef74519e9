#!/usr/bin/env bash
# Install the apt packages labctl needs (as root), only those missing; also the docker CLI where absent.
set -euo pipefail
missing=()
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
need_docker=0
command -v docker >/dev/null 2>&1 || need_docker=1
if [ ${#missing[@]} -eq 0 ] && [ $need_docker -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "labctl needs these system packages: ${missing[*]} $([ $need_docker = 1 ] && echo docker-cli); run 'make' as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing apt packages: ${missing[*]}"
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ $need_docker -eq 1 ]; then
  echo "installing the docker CLI"
  apt-get install -y -qq docker-cli >/dev/null 2>&1 || apt-get install -y -qq docker.io >/dev/null
fi
