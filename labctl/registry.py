"""Where labs live: `$LABCTL_HOME` (default `~/.labctl`) keeps each lab's record and node disks, so every
command finds a lab again; `/run/labctl/<lab>` keeps what a host reboot should forget (pids, node `/run`s).

Lab names are unique per host (namespaces, bridges and sockets are host-wide), so `/run/labctl/<lab>/.owner`
records which `LABCTL_HOME` owns a lab and a second home cannot take the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.errors import LabError, UsageError
from labctl.spec import RUNTIME_ROOT, LabSpec, SpecError, parse_spec


def labctl_home() -> Path:
    return Path(os.environ.get("LABCTL_HOME", "~/.labctl")).expanduser().resolve()


def runtime_root() -> Path:
    return Path(RUNTIME_ROOT)


@dataclass
class LabRecord:
    """A lab as created: the resolved spec (subnet and addresses fixed) and where its files are."""

    spec: LabSpec
    status: str  # "creating" until `up` finished, then "up"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"), "status": self.status}


def lab_dir(name: str) -> Path:
    return labctl_home() / "labs" / name


def lab_runtime_dir(name: str) -> Path:
    return runtime_root() / name


def save(record: LabRecord) -> None:
    d = record.dir
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "lab.json.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2))
    os.replace(tmp, d / "lab.json")


def load(name: str) -> LabRecord:
    path = lab_dir(name) / "lab.json"
    try:
        raw = json.loads(path.read_text())
        spec = parse_spec(raw["spec"], str(path))
        return LabRecord(spec=spec, status=str(raw.get("status", "up")))
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} (labs: {', '.join(names()) or 'none'})") from None
    except (ValueError, KeyError, TypeError, SpecError) as e:
        raise LabError(f"the record of lab {name!r} at {path} is damaged ({e}); remove it with 'labctl down --lab {name}'") from None


def names() -> list[str]:
    root = labctl_home() / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").is_file())


def forget(name: str) -> None:
    shutil.rmtree(lab_dir(name), ignore_errors=True)


def resolve(lab: str | None, spec_name: str | None = None) -> str:
    """Pick the lab a verb acts on: --lab, else the spec's name (-f), else the only lab there is."""
    if lab:
        return lab
    if spec_name:
        return spec_name
    existing = names()
    if len(existing) == 1:
        return existing[0]
    if not existing:
        raise LabError("no lab exists; bring one up with 'labctl up'")
    raise UsageError(f"several labs exist ({', '.join(existing)}); choose one with --lab NAME")


def claim_owner(name: str) -> None:
    """Refuse a lab name another LABCTL_HOME already uses on this host."""
    rt = lab_runtime_dir(name)
    rt.mkdir(parents=True, exist_ok=True)
    owner = rt / ".owner"
    home = str(labctl_home())
    if owner.exists():
        other = owner.read_text().strip()
        if other and other != home and (Path(other) / "labs" / name / "lab.json").exists():
            raise LabError(f"a lab named {name!r} already exists on this host (LABCTL_HOME={other}); choose another name")
    owner.write_text(home + "\n")


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def locked(name: str) -> contextlib.AbstractContextManager[None]:
    """Serialise commands that change one lab (two `labctl up` at once must not both build it)."""
    return _flock(labctl_home() / "locks" / f"{name}.lock")


def host_locked() -> contextlib.AbstractContextManager[None]:
    """Serialise subnet allocation host-wide: two labs coming up at once must not pick the same /24."""
    return _flock(Path("/run/lock/labctl.lock"))
