"""A task's secrets in memory on the node: one small tmpfs per task, for the Docker-engine executor.

dockerd keeps secrets only in swarm mode, a tmpfs written after the container starts races the task's
first read, and a file put into a created container lands in its layer on disk. So, as dockerd does for
its own swarm secrets, the files are written into a fresh tmpfs on the node (RAM, never the disk) before
the container is created, the tmpfs is remounted read-only and bind-mounted at ``/run/secrets``; it is
unmounted when the container is removed. Needs CAP_SYS_ADMIN (the agent runs as root).
"""

from __future__ import annotations

import ctypes
import os

from agents.worker.executor.base import SecretFile

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MNT_DETACH = 2
_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def relative_name(name: str) -> str:
    """``db_pw``, ``/run/secrets/db_pw`` -> ``db_pw``; a name leaving /run/secrets is refused."""
    rel = name.removeprefix("/run/secrets/").lstrip("/")
    norm = os.path.normpath(rel)
    if not rel or norm.startswith("..") or norm == ".":
        raise ValueError(f"invalid secret file name {name!r}")
    return norm


def mount(path: str, secrets: list[SecretFile]) -> None:
    """Mount a tmpfs at ``path`` holding ``secrets`` (with their uid/gid/mode), then make it read-only."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    size = 64 * 1024 + sum(len(s.data) + 4096 for s in secrets)
    libc = _libc()
    _check(libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _FLAGS, f"mode=0755,size={size}".encode()),
           f"mount a tmpfs on {path}")
    try:
        for s in secrets:
            dest = os.path.join(path, relative_name(s.name))
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, s.data)
                os.fchown(fd, s.uid, s.gid)
                os.fchmod(fd, s.mode)
            finally:
                os.close(fd)
        _check(libc.mount(None, os.fsencode(path), None, MS_REMOUNT | MS_RDONLY | _FLAGS, None),
               f"remount {path} read-only")
    except BaseException:
        unmount(path)
        raise


def unmount(path: str) -> None:
    """Detach the tmpfs at ``path`` (its memory is freed) and remove the directory; absent is fine."""
    if _libc().umount2(os.fsencode(path), MNT_DETACH) != 0 and ctypes.get_errno() not in (22, 2):  # EINVAL, ENOENT
        err = ctypes.get_errno()
        raise OSError(err, f"unmount {path}: {os.strerror(err)}")
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def is_tmpfs(path: str) -> bool:
    """Whether a tmpfs is mounted exactly at ``path`` (this process's mount namespace)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) == target and fields[sep + 1] == "tmpfs":
                return True
    return False


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
