"""What a push carries: a wheel of this project and a wheelhouse of the agent's dependencies, built on the
host (which has an index) for the node's Python (which has no internet).

Both are cached under `$XDG_CACHE_HOME/labctl` (default `~/.cache/labctl`), not under LABCTL_HOME, so every
lab and every test shares one build: the project wheel is keyed by a digest of the sources, the wheelhouse
by the node's Python version, its machine and the pinned versions (those installed on the host, so the
agent runs on nodes what it runs in netns labs).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabError

AGENT_DEPENDENCIES = ("aiohttp", "msgpack", "cryptography")
"""Top-level runtime requirements of `agents/` (see pyproject.toml: the node agent's list)."""
DOCKER_EXECUTOR_DEPENDENCIES = ("docker",)
"""What the Docker-engine executor adds (the docker SDK, which brings requests, urllib3, certifi and
charset-normalizer: ~0.75 MB of wheels): only in the wheelhouse of labs with `executor: docker`, so the
default push carries nothing it does not use."""
INSTALLER = "installer>=0.7"
"""PyPA's reference wheel installer (pure Python): installs the wheelhouse on the node from its own wheel,
without pip's resolver and start-up cost (the set is already resolved on the host)."""
SOURCE_DIRS = ("agents", "labctl")
_build_lock = threading.Lock()


@dataclass(frozen=True)
class Bundle:
    """The files to put on a node (all in `wheels`), their digests, and what to install."""

    wheels: dict[str, Path]  # file name -> path on the host
    digests: dict[str, str]  # file name -> sha256
    project_wheel: str
    installer_wheel: str

    @property
    def deps_digest(self) -> str:
        names = sorted(n for n in self.wheels if n != self.project_wheel)
        return hashlib.sha256("".join(f"{n}={self.digests[n]}\n" for n in names).encode()).hexdigest()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labctl"


def project_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise LabError(f"pushing the agent needs labctl's source tree (no pyproject.toml in {root})")
    return root


def source_digest(root: Path) -> str:
    """A digest of everything that goes into the project wheel; a change means a new wheel."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml"]
    for d in SOURCE_DIRS:
        files += sorted(p for p in (root / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and p.suffix not in (".pyc", ".pyo"))
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def pinned_requirements(docker_sdk: bool = False) -> list[str]:
    pins = []
    for name in AGENT_DEPENDENCIES + (DOCKER_EXECUTOR_DEPENDENCIES if docker_sdk else ()):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip(args: list[str], what: str) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                         env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    if res.returncode != 0:
        tail = " | ".join(line for line in res.stderr.strip().splitlines() if "is ignored" not in line)[-600:]
        raise LabError(f"building {what} failed: {tail}")


def project_wheel() -> Path:
    """This project's wheel (PEP 517 build, isolated), rebuilt only when a source file changed."""
    root = project_root()
    out = cache_root() / "project" / source_digest(root)[:16]
    found = sorted(out.glob("*.whl")) if out.is_dir() else []
    if found:
        return found[0]
    tmp = Path(tempfile.mkdtemp(prefix="wheel-", dir=cache_root()))
    try:
        _pip(["wheel", "-q", "--no-deps", "-w", str(tmp), str(root)], "the project wheel")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.whl"))[0]


def dependency_wheels(python: str, machine: str, docker_sdk: bool = False) -> Path:
    """A directory of binary wheels for the agent's dependencies and `installer` (and the docker SDK's if
    asked), for CPython `python` ("3.12") on `machine` ("x86_64"); downloaded once."""
    pins = pinned_requirements(docker_sdk)
    key = hashlib.sha256(json.dumps([python, machine, pins, INSTALLER]).encode()).hexdigest()[:12]
    out = cache_root() / "wheelhouse" / f"cp{python.replace('.', '')}-{machine}-{key}"
    if (out / ".complete").exists():
        return out
    tmp = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache_root()))
    try:
        args = ["download", "-q", "--only-binary=:all:", "--dest", str(tmp), *pins, INSTALLER]
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        if python != host or machine != os.uname().machine:
            args += ["--python-version", python, "--implementation", "cp"]
            for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux1"):
                args += ["--platform", f"{tag}_{machine}"]
        _pip(args, f"the wheelhouse for Python {python} on {machine}")
        (tmp / ".complete").write_text(json.dumps(pins) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build(python: str, machine: str, docker_sdk: bool = False) -> Bundle:
    """The bundle for one kind of node (thread-safe: parallel pushes build once); ``docker_sdk`` for nodes
    whose agent runs tasks on a Docker engine."""
    with _build_lock:
        cache_root().mkdir(parents=True, exist_ok=True)
        project = project_wheel()
        deps = dependency_wheels(python, machine, docker_sdk)
        wheels = {p.name: p for p in sorted(deps.glob("*.whl"))}
        installer = next((n for n in wheels if n.startswith("installer-")), None)
        if installer is None:
            raise LabError(f"the wheelhouse {deps} has no installer wheel; remove it and push again")
        wheels[project.name] = project
        digests = {name: _digest_cached(path) for name, path in wheels.items()}
        return Bundle(wheels, digests, project.name, installer)


_digests: dict[tuple[str, float, int], str] = {}


def _digest_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _digests:
        _digests[key] = _sha256(path)
    return _digests[key]
