#!/usr/bin/env bash
# Install the apt packages labctl needs (as root), only those missing; also the docker CLI where absent.
# Packages that ship a daemon (docker.io, containerd) are installed with their services NOT started:
# a stock dockerd would set the FORWARD policy to DROP and load br_netfilter, cutting the traffic of
# labs on this host. The tests start their own private dockerd; on systemd hosts the service we
# install is left disabled.
set -euo pipefail

# present PKG: whether what PKG gives us is already here (another package may provide it, e.g.
# docker-ce's dockerd: installing docker.io over it would remove it).
present() {
  case "$1" in
    docker.io) command -v dockerd >/dev/null 2>&1 ;;
    busybox) command -v busybox >/dev/null 2>&1 ;;
    *) dpkg -s "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for p in "$@"; do present "$p" || missing+=("$p"); done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
need_docker=0
command -v docker >/dev/null 2>&1 || need_docker=1
if [ ${#missing[@]} -eq 0 ] && [ $need_docker -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "labctl needs these system packages: ${missing[*]} $([ $need_docker = 1 ] && echo docker-cli); run 'make' as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# No service may start during the install (invoke-rc.d and deb-systemd-invoke both obey policy-rc.d).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# labctl install-sysdeps: no service starts while packages install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
daemons=()  # daemon packages installed now: their services stay off
apt_install() {  # apt_install PKG...: daemon packages without recommends (needrestart, apparmor, cgroupfs-mount...)
  local plain=() quiet=()
  for p in "$@"; do
    case "$p" in
      docker.io|containerd) quiet+=("$p"); daemons+=("$p") ;;
      *) plain+=("$p") ;;
    esac
  done
  if [ ${#plain[@]} -gt 0 ]; then apt-get install -y -qq "${plain[@]}" >/dev/null; fi
  if [ ${#quiet[@]} -gt 0 ]; then apt-get install -y -qq --no-install-recommends "${quiet[@]}" >/dev/null; fi
}

apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing apt packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi
if [ $need_docker -eq 1 ]; then
  echo "installing the docker CLI"
  apt-get install -y -qq docker-cli >/dev/null 2>&1 || apt_install docker.io
fi
if [ ${#daemons[@]} -gt 0 ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
  echo "left docker.service and containerd.service disabled (labctl's tests start their own dockerd)"
fi
