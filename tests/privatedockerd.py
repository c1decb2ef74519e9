"""A private, real dockerd for tests (Debian's docker.io), which touches nothing of the host's Docker.

dockerd runs under ``unshare`` in new pid and mount namespaces (and a new network namespace unless it is
started inside a lab node's), with ``docker-init`` as the namespace's init: stopping it kills the pid
namespace, so no process of it (containers included, in nested pid namespaces) can outlive the test, and
its mounts go with the mount namespace. Its containers' cgroups go below a parent named after the test's
temp dir, removed afterwards in every cgroup hierarchy. Images come from ``docker import`` of a rootfs
built from the host's busybox (no registry).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from typing import Any

from agents.worker.executor.docker import engine_reachable

TOOLS = ("dockerd", "containerd", "runc", "unshare", "docker-init", "mount")


def unavailable() -> str | None:
    """Why a private dockerd cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to start a private dockerd"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs Debian's docker.io (missing: {', '.join(missing)}; `make testdeps` installs it)"
    if shutil.which("busybox") is None:
        return "needs busybox (the test image's rootfs)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "needs the docker SDK"
    return None


def rootfs_tar() -> bytes:
    """busybox with its libraries and an applet link per command, plus /etc/passwd: a tiny distro."""
    busybox = os.path.realpath(shutil.which("busybox") or "")
    ldd = subprocess.run(["ldd", busybox], capture_output=True, text=True).stdout
    libs = [w for line in ldd.splitlines() for w in line.split() if w.startswith("/")]
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "lib", "lib64", "lib/x86_64-linux-gnu", "proc", "sys", "dev", "run", "var"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as fh:
            add_file("bin/busybox", fh.read(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for lib in libs:
            parent = os.path.dirname(lib).lstrip("/")
            if parent not in ("lib", "lib64", "lib/x86_64-linux-gnu"):
                add_dir(parent)
            with open(os.path.realpath(lib), "rb") as fh:
                add_file(lib.lstrip("/"), fh.read(), 0o755)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def api(url: str) -> Any:
    import docker

    return docker.APIClient(base_url=url, version="auto", timeout=30)


def spawn(dockerd: Sequence[str], log_path: str, *, enter: Sequence[str] = (), own_net: bool = True,
          run_tmpfs: bool = True) -> subprocess.Popen[bytes]:
    """Start ``dockerd`` (its argv) in new pid+mount namespaces, inside the namespaces ``enter`` joins (a
    node's) if given. ``own_net``: also a new network namespace (loopback only: nothing can leave);
    ``run_tmpfs``: a tmpfs over /run (containerd's shim sockets stay private)."""
    steps = ["ip link set lo up"] if own_net else []
    steps += ["mount -t tmpfs -o mode=0755 tmpfs /run"] if run_tmpfs else []
    script = " && ".join([*steps, 'exec docker-init -- "$@"'])
    unshare = ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--mount", "--propagation", "slave",
               *(["--net"] if own_net else []), "--"]
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([*enter, *unshare, "sh", "-c", script, "sh", *dockerd],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: str, timeout: float = 30.0) -> None:
    """Until the engine answers at ``url``; AssertionError with the log's tail if it dies or is too slow."""
    deadline = time.monotonic() + timeout
    while engine_reachable(url, timeout=2) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path, errors="replace") as fh:
                raise AssertionError(f"dockerd did not start: {fh.read()[-2000:]}")
        time.sleep(0.05)


def import_busybox(url: str, *also: str) -> None:
    """The busybox rootfs as ``busybox:latest`` (and tagged as each of ``also``, e.g. ``alpine``)."""
    client = api(url)
    try:
        image = client.import_image_from_data(rootfs_tar(), repository="busybox", tag="latest")
        assert "sha256:" in str(image), image
        for name in also:
            client.tag("busybox:latest", name, "latest")
    finally:
        client.close()


def init_pid(unshare_pid: int) -> int:
    """The host pid of the namespace's init (the child ``unshare --fork`` made)."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{unshare_pid}/task/{unshare_pid}/children") as fh:
            kids = fh.read().split()
        if kids:
            return int(kids[0])
    return 0


def stop(
    url: str, proc: subprocess.Popen[bytes], marker: str, leaked: list[str], *, report_containers: bool = True
) -> None:
    """Remove the containers left (reported in ``leaked`` if ``report_containers``), then stop dockerd; its
    pid namespace ends with it. ``marker``: a path every process of it has on its command line."""
    with contextlib.suppress(Exception):
        client = api(url)
        for c in client.containers(all=True):
            if report_containers:
                leaked.append(f"container {c['Names']} {c['State']}")
            client.remove_container(c["Id"], force=True)
        client.close()
    init = init_pid(proc.pid)
    if init:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGTERM)  # docker-init passes it to dockerd, which stops containerd
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        leaked.append("dockerd ignored SIGTERM")
        if init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)  # the pid namespace dies with its init
        proc.kill()  # --kill-child: unshare's death SIGKILLs the init too
        proc.wait(timeout=10)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    leaked.append(f"process {pid}")


def mounts_under(path: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            target = line.split()[4]
            if target == path or target.startswith(path + "/"):
                out.append(target)
    return out


def remove_cgroup_parent(name: str, leaked: list[str]) -> None:
    """dockerd's ``--cgroup-parent=/<name>`` in every hierarchy (v2, or each of v1/hybrid); a container
    cgroup still there is reported in ``leaked``."""
    cg = "/sys/fs/cgroup"
    for parent in [os.path.join(cg, name), *(os.path.join(cg, h, name) for h in os.listdir(cg))]:
        if os.path.isdir(parent):
            for sub in os.listdir(parent):
                if os.path.isdir(os.path.join(parent, sub)):
                    leaked.append(f"cgroup {parent}/{sub[:12]}")
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, sub))
            with contextlib.suppress(OSError):
                os.rmdir(parent)  # dockerd creates the parent and leaves it
            if os.path.isdir(parent):
                leaked.append(f"cgroup {parent}")
