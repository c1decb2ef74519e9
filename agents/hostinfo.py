"""Facts about the host the agent runs on, read the way dockerd reads them (/proc, uname, os-release).

Static facts are cached after the first read; nothing here is touched before the first /info or
/version request, so start-up does not pay for it.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@functools.cache
def kernel_version() -> str:
    return os.uname().release


@functools.cache
def architecture() -> str:
    """``uname -m`` (the /info ``Architecture``)."""
    return os.uname().machine


@functools.cache
def go_arch() -> str:
    """The GOARCH spelling of the machine (the /version ``Arch``)."""
    machine = architecture()
    return _GOARCH.get(machine, machine)


@functools.cache
def ncpu() -> int:
    """Logical CPUs usable by this process (dockerd's sysinfo.NumCPU also honours the affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.cache
def mem_total() -> int:
    """Physical memory in bytes from /proc/meminfo (0 if unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0


@functools.cache
def os_release() -> dict[str, str]:
    """/etc/os-release (or /usr/lib/os-release) as a dict, quotes removed."""
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(candidate).read_text()
        except OSError:
            continue
        out: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key and not key.startswith("#"):
                out[key.strip()] = value.strip().strip("\"'")
        return out
    return {}


def operating_system() -> str:
    rel = os_release()
    return rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux"


def os_version() -> str:
    return os_release().get("VERSION_ID", "")


@functools.cache
def cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def sysctl_enabled(path: str) -> bool:
    """True if a /proc/sys flag reads 1; False when it is 0 or absent (e.g. br_netfilter not loaded)."""
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def python_version() -> str:
    v = sys.version_info
    return f"python{v.major}.{v.minor}.{v.micro}"


def mask_credentials(url: str) -> str:
    """Hide the user:password of a proxy URL the way dockerd does ("xxxxx:xxxxx")."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"xxxxx:xxxxx@{host}"))


def proxy_env(name: str) -> str:
    """``NAME`` or ``name`` from the environment, as dockerd's getConfigOrEnv reads it."""
    return os.environ.get(name) or os.environ.get(name.lower()) or ""
