"""``docker exec``'s process: enters a running task and becomes the requested command.

    python -I -S nsexec.py FD        (spawned by `execs.spawn`; never run by hand)

Why a separate program: entering a mount namespace (``setns``) is refused to a multi-threaded process,
and the agent has threads. This one is single-threaded and short-lived: it reads its configuration (a
``marshal``-ed dict) from fd ``FD``, then

1. joins the task's cgroup (so a task's exit or ``docker rm -f`` also ends its exec'd processes, as the
   cgroup is killed);
2. opens ``/proc/<pid>/ns/{uts,net,mnt}`` of the task's program first and then enters them, mount last
   (after which it sees the task's private ``/run`` and ``/run/secrets``);
3. with a terminal: becomes a session leader (the agent spawned it with ``setsid``) and takes the pty
   slave on fd 0 as its controlling terminal;
4. drops to the exec's user and group, changes to its working directory (the container's, or ``/``
   where the host lacks the image's directory, as for the task itself) and ``execve``s the command
   with the prepared environment.

Failures print Docker's "OCI runtime exec failed: ..." text on stderr (which the client sees) and exit
127 (not found) or 126 (cannot be run), the codes dockerd reports for an exec that could not start.
Imports: C modules only, so it starts in a few milliseconds.
"""

from __future__ import annotations

import marshal
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
NAMESPACES = (("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS))
TIOCSCTTY = 0x540E
PREFIX = "OCI runtime exec failed: exec failed: unable to start container process: "


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _fail(text: str, code: int) -> None:
    os.write(2, (PREFIX + text + ": unknown\r\n").encode(errors="replace"))
    os._exit(code)


def _enter(cfg: dict[str, Any]) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    cgroup = cfg.get("cgroup")
    if cgroup:
        try:
            with open(os.path.join(str(cgroup), "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass  # the task is ending (its cgroup is gone) or has none: namespaces still isolate
    pid = int(cfg["pid"])
    fds = []
    for name, flag in NAMESPACES:
        try:
            fds.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag, name))
        except OSError as e:
            _fail(f"container process is gone ({name} namespace: {e.strerror})", 126)
    for fd, flag, name in fds:
        if libc.setns(fd, flag) != 0:
            err = ctypes.get_errno()
            _fail(f"entering the {name} namespace: {os.strerror(err)}", 126)
        os.close(fd)


def _become(cfg: dict[str, Any]) -> None:
    if cfg.get("tty"):
        import fcntl

        try:
            fcntl.ioctl(0, TIOCSCTTY, 0)
        except OSError:
            pass  # still usable as a terminal, only without job control
    gid, uid = cfg.get("gid"), cfg.get("uid")
    if gid is not None:
        os.setgroups([int(g) for g in cfg.get("groups") or []])
        os.setgid(int(gid))
    if uid is not None:
        os.setuid(int(uid))
    cwd = str(cfg.get("cwd") or "/")
    try:
        os.chdir(cwd)
    except OSError as e:
        if cfg.get("cwd_fallback"):  # the image's directory, which the host may lack: as the task did
            os.chdir("/")
            return
        _fail(f'chdir to cwd ("{cwd}") set in config.json failed: {(e.strerror or str(e)).lower()}', 127)


def _exec(cfg: dict[str, Any]) -> None:
    argv = [str(a) for a in cfg["argv"]]
    env = {str(k): str(v) for k, v in dict(cfg["env"]).items()}
    name = argv[0]
    candidates = [name] if "/" in name else [
        os.path.join(d or ".", name) for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":")
    ]
    denied = False
    for path in candidates:
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                denied = True
                continue
            try:
                os.execve(path, argv, env)
            except OSError as e:
                _fail(f'exec: "{name}": {(e.strerror or str(e)).lower()}', 126)
    if denied:
        _fail(f'exec: "{name}": permission denied', 126)
    if "/" in name:
        _fail(f'exec: "{name}": stat {name}: no such file or directory', 127)
    _fail(f'exec: "{name}": executable file not found in $PATH', 127)


def main() -> None:
    try:
        fd = int(sys.argv[1])
        cfg = marshal.loads(_read_all(fd))
        os.close(fd)
    except (IndexError, ValueError, EOFError, OSError, TypeError) as e:
        _fail(f"reading the exec configuration: {e}", 126)
    _enter(cfg)
    try:
        _become(cfg)
    except OSError as e:
        _fail(f"setting up the exec process: {e.strerror or e}", 126)
    _exec(cfg)


if __name__ == "__main__":
    main()
