"""One cgroup v2 per task, below the agent's own cgroup, so a node's halt (``cgroup.kill`` of the node)
takes its tasks along, and a task's leftovers can be killed as a unit.

Limits (``memory.max``, ``cpu.max``) are written only where the controllers are delegated to the task
cgroups; on hosts where they are not (a hybrid v1/v2 host, or a node cgroup that itself holds processes
and so cannot enable controllers for its children) the cgroup still groups and kills the task's
processes, and the limits are skipped with one log line. Everything degrades to "no cgroup" when
cgroup2 is not mounted or not writable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

CPU_PERIOD_US = 100_000


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the unified hierarchy is mounted (``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``)."""
    try:
        with open(mountinfo) as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def own_cgroup(pid: int | str = "self") -> str | None:
    """This process's cgroup v2 path (``/labctl/lab/node``), from ``/proc/<pid>/cgroup``'s ``0::`` line."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def default_parent() -> str | None:
    """``<mount><own cgroup>/tasks``: below the agent, so the node's cgroup contains its tasks."""
    mount, own = cgroup2_mount(), own_cgroup()
    if mount is None or own is None:
        return None
    return os.path.join(mount, own.lstrip("/"), "tasks")


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write(value)
        return True
    except OSError:
        return False


class TaskCgroups:
    """Creates, limits, kills and removes the per-task cgroups under ``parent`` (None: disabled)."""

    def __init__(self, parent: str | None) -> None:
        self.parent = parent
        self._ready = False
        self._warned = False

    def _ensure_parent(self) -> bool:
        if self.parent is None:
            return False
        if not self._ready:
            try:
                os.makedirs(self.parent, exist_ok=True)
            except OSError as e:
                log.warning("task cgroups disabled: cannot create %s: %s", self.parent, e)
                self.parent = None
                return False
            # Delegate what we can; fails harmlessly where the controllers are not available.
            for ctl in ("memory", "cpu", "pids"):
                _write(os.path.join(self.parent, "cgroup.subtree_control"), f"+{ctl}")
            self._ready = True
        return True

    def create(self, container_id: str, memory_bytes: int = 0, nano_cpus: int = 0) -> str | None:
        """The task's cgroup directory (created), or None when cgroups are unavailable."""
        if not self._ensure_parent():
            return None
        assert self.parent is not None
        path = os.path.join(self.parent, container_id)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            log.warning("no cgroup for task %s: %s", container_id[:12], e)
            return None
        if memory_bytes or nano_cpus:
            self.set_limits(path, memory_bytes, nano_cpus)
        return path

    def set_limits(self, path: str, memory_bytes: int, nano_cpus: int) -> bool:
        ok = True
        if memory_bytes:
            ok &= _write(os.path.join(path, "memory.max"), str(memory_bytes))
        if nano_cpus:
            quota = max(1000, nano_cpus * CPU_PERIOD_US // 1_000_000_000)
            ok &= _write(os.path.join(path, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
        if not ok and not self._warned:
            self._warned = True
            log.warning("cgroup v2 memory/cpu controllers not delegated to %s: task limits not enforced", path)
        return ok

    @staticmethod
    def procs(path: str) -> list[int]:
        try:
            with open(os.path.join(path, "cgroup.procs")) as fh:
                return [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return []

    @staticmethod
    def kill(path: str) -> None:
        """SIGKILL everything in the cgroup (``cgroup.kill``; per pid on kernels before 5.14)."""
        if _write(os.path.join(path, "cgroup.kill"), "1"):
            return
        for pid in TaskCgroups.procs(path):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def remove(path: str, timeout_s: float = 2.0) -> bool:
        """Kill what is left and remove the directory (retried while the kernel empties it)."""
        if not os.path.isdir(path):
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            if TaskCgroups.procs(path):
                TaskCgroups.kill(path)
            try:
                os.rmdir(path)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("cgroup %s could not be removed", path)
                    return False
                time.sleep(0.01)
