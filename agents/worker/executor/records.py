"""The runtime record of each task, on the node's disk, so a restarted agent can find its tasks again.

``<state-dir>/worker/tasks/<task id>.json`` holds the container id, the supervisor's and the program's
pids with their start times (``/proc/<pid>/stat`` field 22: a pid alone may have been reused), the
cgroup and addresses, and the task itself (never secret data: a Task only names its secrets).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] in (b"Z", b"X")


def alive(pid: int, start: int | None) -> bool:
    """Is ``pid`` still the process that was started at ``start`` (and not a zombie)?"""
    return start is not None and proc_start_time(pid) == start and not is_zombie(pid)


@dataclass
class RuntimeRecord:
    task_id: str
    container_id: str
    task: dict[str, Any]
    image: str = ""
    argv: list[str] = field(default_factory=list)
    created: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    shim_pid: int = 0
    shim_start: int | None = None
    pid: int = 0
    pid_start: int | None = None
    cgroup: str | None = None
    addresses: list[str] = field(default_factory=list)
    """CIDR addresses of the task's interfaces (eth0 first)."""
    state: str = "created"
    """created | running | exited."""
    error: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeRecord:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


_FIELDS = tuple(f.name for f in fields(RuntimeRecord))


class RecordStore:
    """Atomic JSON files, one per task."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def path(self, task_id: str) -> str:
        return os.path.join(self.dir, f"{task_id}.json")

    def save(self, rec: RuntimeRecord) -> None:
        # Shallow field copy + the C encoder (``json.dump`` and ``asdict`` are pure Python and deep-copy the
        # task: they made records the largest cost of a task start).
        data = json.dumps({name: getattr(rec, name) for name in _FIELDS})
        tmp = os.path.join(self.dir, f".{rec.task_id}.tmp")
        with open(tmp, "w") as fh:
            fh.write(data)
        os.replace(tmp, self.path(rec.task_id))

    def delete(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(task_id))

    def load_all(self) -> list[RuntimeRecord]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as fh:
                    out.append(RuntimeRecord.from_dict(json.load(fh)))
            except (OSError, ValueError, TypeError):
                continue  # a damaged record: the task is reported lost by the worker
        return out
