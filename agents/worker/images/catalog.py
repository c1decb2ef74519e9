"""Image references -> what to run: the catalog of built-in images and the ones labs register.

labctl has no registry and no container engine. An image reference (``nginx``, ``nginx:1.25``,
``docker.io/library/nginx@sha256:...``) resolves to an `ImageSpec` that carries what a real image's
config carries (entrypoint, cmd, exposed ports, env, working dir, stop signal) plus *how* to run it:
either a small Python program (``runner="python"``) or the host's own binaries (``runner="host"``,
for alpine/busybox-like images whose commands are ordinary Unix tools).

This module is imported by every task process (through ``run.py``), so it imports only ``os`` and
``sys`` at module level; hashing and JSON are imported where they are needed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "ExecNotFound",
    "ImageError",
    "ImageSpec",
    "InvalidReference",
    "NoSuchImage",
    "build_argv",
    "host_argv",
    "image_inspect",
    "load_catalog_file",
    "normalize",
    "overlay_env",
    "register",
    "resolve",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
"""The task entry point; spawned by path so the interpreter can start with ``-I -S`` (fast, small)."""

_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


class ImageError(Exception):
    """An image problem, worded like the Docker daemon words it (the executor shows it as the task error)."""


class NoSuchImage(ImageError):
    """The reference is well formed but not in the catalog."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")
        self.ref = ref


class InvalidReference(ImageError):
    """The reference cannot be parsed (Docker: ``invalid reference format``)."""


class ExecNotFound(ImageError):
    """The container command names a binary that does not exist (Docker exits 127 with this text)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            "OCI runtime create failed: runc create failed: unable to start container process: "
            f'exec: "{name}": executable file not found in $PATH: unknown'
        )
        self.name = name


class ImageSpec:
    """One image: its Docker config and how labctl runs it.

    A plain slotted class rather than a dataclass: ``dataclasses`` pulls in ``inspect`` and costs
    ~3 MB and ~20 ms in every task process.

    ``programs`` are the argv[0] basenames the Python program implements (``nginx``, ``redis-server``);
    ``wrappers`` are entry-point scripts that just exec their arguments (``/docker-entrypoint.sh``);
    ``dash_program`` is what a wrapper prepends when the first argument is a flag (redis/mysql:
    ``docker run redis --appendonly yes``). Any other command runs on the host's binaries, as it
    would in the real image's shell, unless ``has_shell`` is false (scratch images like whoami).
    """

    __slots__ = (
        "architecture",
        "builtin",
        "cmd",
        "created",
        "dash_program",
        "entrypoint",
        "env",
        "exposed_ports",
        "has_shell",
        "labels",
        "module",
        "name",
        "programs",
        "runner",
        "size",
        "stop_signal",
        "tag",
        "version",
        "working_dir",
        "wrappers",
    )

    def __init__(
        self,
        name: str,
        tag: str,
        *,
        runner: str,
        module: str | None = None,
        version: str = "",
        entrypoint: Sequence[str] = (),
        cmd: Sequence[str] = (),
        exposed_ports: Sequence[str] = (),
        env: Sequence[str] = (),
        working_dir: str = "",
        stop_signal: str = "",
        labels: Mapping[str, str] | None = None,
        programs: Sequence[str] = (),
        wrappers: Sequence[str] = (),
        dash_program: str | None = None,
        has_shell: bool = True,
        size: int = 10_000_000,
        created: str = "2024-06-01T00:00:00Z",
        architecture: str = "",
        builtin: bool = False,
    ) -> None:
        if runner not in ("python", "host"):
            raise ValueError(f"runner must be 'python' or 'host', not {runner!r}")
        if runner == "python" and not module:
            raise ValueError("a python image needs a module")
        self.name = name
        self.tag = tag
        self.runner = runner
        self.module = module
        self.version = version
        self.entrypoint = tuple(entrypoint)
        self.cmd = tuple(cmd)
        self.exposed_ports = tuple(p if "/" in p else f"{p}/tcp" for p in exposed_ports)
        self.env = tuple(env) if any(e.startswith("PATH=") for e in env) else (f"PATH={DEFAULT_PATH}", *env)
        self.working_dir = working_dir
        self.stop_signal = stop_signal
        self.labels = dict(labels or {})
        self.programs = tuple(programs)
        self.wrappers = tuple(wrappers)
        self.dash_program = dash_program
        self.has_shell = has_shell
        self.size = size
        self.created = created
        self.architecture = architecture
        self.builtin = builtin

    @property
    def ref(self) -> str:
        """``name:tag`` as Docker prints it in RepoTags."""
        return f"{self.name}:{self.tag}"

    def env_dict(self) -> dict[str, str]:
        """The image's Env as a mapping (the executor layers the service's env over it)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form, used to hand a registered image to the task process."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ImageSpec:
        """Inverse of `to_dict` (lists may come back from JSON where tuples went in)."""
        kwargs = dict(data)
        name = str(kwargs.pop("name"))
        tag = str(kwargs.pop("tag"))
        return cls(name, tag, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"ImageSpec({self.ref!r}, runner={self.runner!r}, module={self.module!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageSpec) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- references


def overlay_env(env: dict[str, str], items: Iterable[str]) -> None:
    """Layer a container's Env over ``env`` (the image's): ``KEY=VALUE`` sets, a bare ``KEY`` passes the
    agent's own value through, or nothing where the agent has none."""
    for item in items:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]


def normalize(image_ref: str) -> tuple[str, str]:
    """``(name, tag)`` of a reference the way Docker reads it.

    Docker Hub prefixes (``docker.io/``, ``library/``) are dropped, a missing tag is ``latest`` and a
    digest (``@sha256:...``) is accepted and ignored: the catalog has one build of each tag.
    """
    ref = image_ref.strip()
    if not ref:
        raise InvalidReference("invalid reference format")
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        algo, _, hexpart = digest.partition(":")
        if not algo or not hexpart or not ref:
            raise InvalidReference("invalid reference format")
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
        if not tag:
            raise InvalidReference("invalid reference format")
    parts = name.split("/")
    if len(parts) > 1 and parts[0] in _DOCKER_HUB:
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    name = "/".join(parts)
    if not name or any(not p for p in parts):
        raise InvalidReference("invalid reference format")
    registry = parts[0] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]) else ""
    repo = "/".join(parts[1:]) if registry else name
    if repo != repo.lower():
        raise InvalidReference("invalid reference format: repository name must be lowercase")
    if not _valid_tag(tag) or not all(_valid_component(p) for p in repo.split("/")):
        raise InvalidReference("invalid reference format")
    return name, tag


def _valid_tag(tag: str) -> bool:
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
    return len(tag) <= 128 and tag[0] not in ".-" and all(c in ok for c in tag)


def _valid_component(part: str) -> bool:
    ok = "abcdefghijklmnopqrstuvwxyz0123456789._-"
    return part[0].isalnum() and part[-1].isalnum() and all(c in ok for c in part)


# --------------------------------------------------------------------------- versions


def _version(tag: str, table: Mapping[str, str], latest: str, words: Mapping[str, str] | None = None) -> str:
    """The full version a tag stands for: ``1.25`` -> ``1.25.5``, ``1.25.3-alpine`` -> ``1.25.3``.

    Variant suffixes (``-alpine``, ``-bookworm``) are dropped; word tags (``latest``, ``alpine``,
    ``stable``) map to the catalog's recent release.
    """
    base = tag.split("-", 1)[0]
    if words and base in words:
        return words[base]
    if not base[:1].isdigit():
        return latest
    if base in table:
        return table[base]
    nums = base.split(".")
    if len(nums) >= 3 and all(n.isdigit() for n in nums):
        return base
    if len(nums) == 2 and all(n.isdigit() for n in nums):
        return f"{base}.0"
    return latest


NGINX_VERSIONS = {
    "1": "1.27.4",
    "1.14": "1.14.2",
    "1.15": "1.15.12",
    "1.16": "1.16.1",
    "1.17": "1.17.10",
    "1.18": "1.18.0",
    "1.19": "1.19.10",
    "1.20": "1.20.2",
    "1.21": "1.21.6",
    "1.22": "1.22.1",
    "1.23": "1.23.4",
    "1.24": "1.24.0",
    "1.25": "1.25.5",
    "1.26": "1.26.3",
    "1.27": "1.27.4",
}
HTTPD_VERSIONS = {"2": "2.4.62", "2.4": "2.4.62", "2.2": "2.2.34"}
REDIS_VERSIONS = {
    "3": "3.2.12",
    "3.2": "3.2.12",
    "4": "4.0.14",
    "4.0": "4.0.14",
    "5": "5.0.14",
    "5.0": "5.0.14",
    "6": "6.2.16",
    "6.0": "6.0.20",
    "6.2": "6.2.16",
    "7": "7.4.1",
    "7.0": "7.0.15",
    "7.2": "7.2.6",
    "7.4": "7.4.1",
}
MYSQL_VERSIONS = {
    "5": "5.7.44",
    "5.6": "5.6.51",
    "5.7": "5.7.44",
    "8": "8.4.3",
    "8.0": "8.0.40",
    "8.4": "8.4.3",
    "9": "9.1.0",
    "9.1": "9.1.0",
}


# --------------------------------------------------------------------------- built-in catalog

_P = "agents.worker.images.programs."


def _nginx(tag: str) -> ImageSpec:
    v = _version(tag, NGINX_VERSIONS, "1.27.4", {"stable": "1.26.3", "mainline": "1.27.4"})
    return ImageSpec(
        "nginx",
        tag,
        runner="python",
        module=_P + "nginx",
        version=v,
        entrypoint=["/docker-entrypoint.sh"],
        cmd=["nginx", "-g", "daemon off;"],
        exposed_ports=["80/tcp"],
        env=[f"PATH={DEFAULT_PATH}", f"NGINX_VERSION={v}", "NJS_VERSION=0.8.4", "PKG_RELEASE=1~bookworm"],
        stop_signal="SIGQUIT",
        labels={"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"},
        programs=["nginx", "nginx-debug"],
        wrappers=["docker-entrypoint.sh"],
        size=187_694_648 if "alpine" not in tag else 43_300_000,
    )


def _httpd(tag: str) -> ImageSpec:
    v = _version(tag, HTTPD_VERSIONS, "2.4.62")
    return ImageSpec(
        "httpd",
        tag,
        runner="python",
        module=_P + "httpd",
        version=v,
        cmd=["httpd-foreground"],
        exposed_ports=["80/tcp"],
        env=[
            f"PATH=/usr/local/apache2/bin:{DEFAULT_PATH}",
            "HTTPD_PREFIX=/usr/local/apache2",
            f"HTTPD_VERSION={v}",
        ],
        working_dir="/usr/local/apache2",
        stop_signal="SIGWINCH",
        programs=["httpd-foreground", "httpd", "apachectl"],
        size=147_983_360 if "alpine" not in tag else 61_500_000,
    )


def _redis(tag: str) -> ImageSpec:
    v = _version(tag, REDIS_VERSIONS, "7.4.1")
    return ImageSpec(
        "redis",
        tag,
        runner="python",
        module=_P + "redis",
        version=v,
        entrypoint=["docker-entrypoint.sh"],
        cmd=["redis-server"],
        exposed_ports=["6379/tcp"],
        env=[f"PATH={DEFAULT_PATH}", "GOSU_VERSION=1.17", f"REDIS_VERSION={v}"],
        working_dir="/data",
        programs=["redis-server"],
        wrappers=["docker-entrypoint.sh"],
        dash_program="redis-server",
        size=116_817_408 if "alpine" not in tag else 41_200_000,
    )


def _mysql(tag: str) -> ImageSpec:
    v = _version(tag, MYSQL_VERSIONS, "9.1.0", {"lts": "8.4.3", "innovation": "9.1.0"})
    major = ".".join(v.split(".")[:2])
    return ImageSpec(
        "mysql",
        tag,
        runner="python",
        module=_P + "mysql",
        version=v,
        entrypoint=["docker-entrypoint.sh"],
        cmd=["mysqld"],
        exposed_ports=["3306/tcp", "33060/tcp"],
        env=[
            f"PATH={DEFAULT_PATH}",
            "GOSU_VERSION=1.16",
            f"MYSQL_MAJOR={major}",
            f"MYSQL_VERSION={v}-1.el7" if major == "5.7" else f"MYSQL_VERSION={v}-1.el9",
        ],
        programs=["mysqld"],
        wrappers=["docker-entrypoint.sh"],
        dash_program="mysqld",
        size=501_247_488 if major == "5.7" else 590_000_000,
    )


def _shell_image(name: str, default_cmd: str, size: int, version: str) -> Callable[[str], ImageSpec]:
    def make(tag: str) -> ImageSpec:
        return ImageSpec(name, tag, runner="host", version=version, cmd=[default_cmd], size=size)

    return make


def _whoami(tag: str) -> ImageSpec:
    return ImageSpec(
        "traefik/whoami",
        tag,
        runner="python",
        module=_P + "whoami",
        version="1.10.3" if not tag[:1].isdigit() and not tag.startswith("v") else tag.lstrip("v"),
        entrypoint=["/whoami"],
        exposed_ports=["80/tcp"],
        programs=["whoami"],
        has_shell=False,
        size=6_844_568,
    )


def _flask(tag: str) -> ImageSpec:
    return ImageSpec(
        "sposigor/app-flask-teste",
        tag,
        runner="python",
        module=_P + "flaskapp",
        version="2.0.3",
        cmd=["python", "app.py"],
        exposed_ports=["5000/tcp"],
        env=[
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "PYTHON_VERSION=3.9.7",
        ],
        working_dir="/app",
        programs=["python", "python3", "app.py", "flask"],
        size=125_000_000,
    )


def _nodehello(tag: str) -> ImageSpec:
    return ImageSpec(
        "drhelius/helloworld-node-microservice",
        tag,
        runner="python",
        module=_P + "nodehello",
        version="1.0.0",
        cmd=["npm", "start"],
        exposed_ports=["8080/tcp"],
        env=[f"PATH={DEFAULT_PATH}", "NODE_VERSION=8.9.4", "YARN_VERSION=1.3.2"],
        working_dir="/usr/src/app",
        programs=["npm", "node", "server.js"],
        size=676_000_000,
    )


def _hello_world(tag: str) -> ImageSpec:
    return ImageSpec(
        "hello-world",
        tag,
        runner="python",
        module=_P + "hello",
        cmd=["/hello"],
        programs=["hello"],
        has_shell=False,
        size=13_256,
    )


_BUILTIN: dict[str, Callable[[str], ImageSpec]] = {
    "nginx": _nginx,
    "httpd": _httpd,
    "redis": _redis,
    "mysql": _mysql,
    "alpine": _shell_image("alpine", "/bin/sh", 7_800_000, "3.20.3"),
    "busybox": _shell_image("busybox", "sh", 4_270_000, "1.36.1"),
    "ubuntu": _shell_image("ubuntu", "/bin/bash", 78_100_000, "24.04"),
    "debian": _shell_image("debian", "bash", 116_500_000, "12"),
    "traefik/whoami": _whoami,
    "sposigor/app-flask-teste": _flask,
    "drhelius/helloworld-node-microservice": _nodehello,
    "hello-world": _hello_world,
}

_REGISTERED: dict[str, ImageSpec] = {}
"""Lab-registered images, keyed by ``name:tag`` (and ``name:*`` for any tag)."""

_loaded_env_file = False


def resolve(image_ref: str) -> ImageSpec:
    """The `ImageSpec` for a reference; `NoSuchImage` ("No such image: foo:latest") if unknown."""
    name, tag = normalize(image_ref)
    spec = _lookup(name, tag)
    if spec is None:
        _load_env_catalog()
        spec = _lookup(name, tag)
    if spec is None:
        raise NoSuchImage(f"{name}:{tag}")
    return spec


def _lookup(name: str, tag: str) -> ImageSpec | None:
    found = _REGISTERED.get(f"{name}:{tag}") or _REGISTERED.get(f"{name}:*")
    if found is not None:
        if found.tag != tag:
            found = ImageSpec.from_dict({**found.to_dict(), "tag": tag})
        return found
    make = _BUILTIN.get(name)
    if make is None:
        return None
    spec = make(tag)
    spec.builtin = True
    return spec


def builtin_names() -> list[str]:
    """Repository names of the built-in images (for listings and docs)."""
    return sorted(_BUILTIN)


# --------------------------------------------------------------------------- registration


def register(
    name: str,
    *,
    module: str | None = None,
    command: Sequence[str] | None = None,
    tags: Iterable[str] = ("*",),
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    ports: Sequence[str] = (),
    env: Sequence[str] | Mapping[str, str] = (),
    working_dir: str = "",
    version: str = "",
    stop_signal: str = "",
    programs: Sequence[str] = (),
    has_shell: bool = True,
    labels: Mapping[str, str] | None = None,
) -> ImageSpec:
    """Add an image to the catalog, for labs that need more than the built-ins.

    Either ``module`` (a Python module with ``main(argv: list[str], spec: ImageSpec) -> int``; the
    task runs it whenever argv[0]'s basename is in ``programs``, which defaults to the basename of
    the first word of entrypoint+cmd) or ``command`` (an image whose default command is ``command``,
    run with the host's binaries, like alpine). ``tags`` defaults to any tag. Returns the spec of
    the first tag. Registered images are passed to the task process whole (see `host_argv`), so
    they work in child processes without re-registering.
    """
    if (module is None) == (command is None):
        raise ValueError("register() needs exactly one of module= or command=")
    name, _ = normalize(name)
    env_list = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)
    if command is not None:
        cmd = list(command)
    first = next(iter([*entrypoint, *cmd]), "")
    progs = list(programs) or ([os.path.basename(first)] if first and module else [])
    specs = []
    for tag in tags:
        spec = ImageSpec(
            name,
            tag,
            runner="python" if module else "host",
            module=module,
            version=version,
            entrypoint=entrypoint,
            cmd=cmd,
            exposed_ports=ports,
            env=env_list,
            working_dir=working_dir,
            stop_signal=stop_signal,
            programs=progs,
            has_shell=has_shell,
            labels=labels,
        )
        _REGISTERED[f"{name}:{tag}"] = spec
        specs.append(spec)
    if not specs:
        raise ValueError("register() needs at least one tag")
    first_spec = specs[0]
    if first_spec.tag == "*":
        return ImageSpec.from_dict({**first_spec.to_dict(), "tag": "latest"})
    return first_spec


def register_entry(entry: Mapping[str, object]) -> ImageSpec:
    """Register one catalog-file entry (a dict with `register`'s keyword names plus ``name``)."""
    data = dict(entry)
    name = str(data.pop("name"))
    return register(name, **data)  # type: ignore[arg-type]


def unregister(name: str) -> None:
    """Drop every registered tag of ``name`` (tests; labs that reset)."""
    name, _ = normalize(name)
    for key in [k for k in _REGISTERED if k.rpartition(":")[0] == name]:
        del _REGISTERED[key]


def load_catalog_file(path: str) -> list[ImageSpec]:
    """Register the entries of a JSON (or, if PyYAML is installed, YAML) catalog file.

    The file holds a list of entries or ``{"images": [...]}``; each entry is a mapping of
    `register` keywords plus ``name``, e.g. ``{"name": "acme/api", "module": "labs.acme.api",
    "cmd": ["api"], "ports": ["8000/tcp"]}``.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    data: object
    if path.endswith((".yaml", ".yml")):
        import yaml  # only lab authors' machines need PyYAML

        data = yaml.safe_load(text)
    else:
        import json

        data = json.loads(text)
    if isinstance(data, Mapping):
        data = data.get("images", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of image entries")
    return [register_entry(entry) for entry in data]


def _load_env_catalog() -> None:
    """Load ``$LABCTL_IMAGES`` (a catalog file) once, so agents and tasks see the lab's images."""
    global _loaded_env_file
    if _loaded_env_file:
        return
    _loaded_env_file = True
    path = os.environ.get("LABCTL_IMAGES")
    if path and os.path.exists(path):
        load_catalog_file(path)


# --------------------------------------------------------------------------- argv


def build_argv(
    spec: ImageSpec,
    entrypoint_override: Sequence[str] | None = None,
    cmd_override: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
) -> list[str]:
    """The container's argv after Docker's entrypoint/cmd merge.

    ``entrypoint_override`` is ``--entrypoint`` / a service's ``ContainerSpec.Command``; ``args``
    are the words after the image (a service's ``ContainerSpec.Args``); ``cmd_override`` is the
    Engine API's ``Config.Cmd``. Both of the last two replace the image CMD (``args`` wins).
    As in dockerd: an overridden entrypoint (even an empty one, ``--entrypoint ""``) drops the
    image's CMD; otherwise a missing cmd falls back to the image's.
    """
    cmd = list(args) if args else list(cmd_override or [])
    if entrypoint_override is None:
        entrypoint = list(spec.entrypoint)
        if not cmd:
            cmd = list(spec.cmd)
    else:
        entrypoint = [e for e in entrypoint_override if e != ""] if len(entrypoint_override) == 1 else list(
            entrypoint_override
        )
    argv = entrypoint + cmd
    if not argv:
        raise ImageError("No command specified")
    return argv


def program_argv(spec: ImageSpec, argv: Sequence[str]) -> list[str] | None:
    """The argv the image's Python program handles, or None when argv is a host command.

    Entry-point wrappers (``docker-entrypoint.sh``) are peeled off the way the real scripts do:
    a first argument that is a flag gets the image's main program prepended.
    """
    if spec.runner != "python":
        return None
    words = list(argv)
    if words and os.path.basename(words[0]) in spec.wrappers:
        words = words[1:]
        if spec.dash_program and (not words or words[0].startswith("-")):
            words = [spec.dash_program, *words]
    if words and os.path.basename(words[0]) in spec.programs:
        return words
    if not spec.programs and words:
        return words
    return None


def find_executable(name: str, path: str | None = None) -> str | None:
    """``execvp``'s lookup (a name with a slash is taken as is), without importing shutil."""
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    for d in (path or os.environ.get("PATH") or DEFAULT_PATH).split(os.pathsep):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def host_command(spec: ImageSpec, argv: Sequence[str], path: str | None = None) -> list[str]:
    """Map a container command to the host binary that runs it; `ExecNotFound` if there is none.

    ``/bin/sh`` in alpine becomes the host's ``/bin/sh``; a command the host lacks falls back to
    ``busybox <applet>`` when busybox is installed (alpine and busybox images are busybox inside).
    """
    if argv and os.path.basename(argv[0]) in spec.wrappers:  # the entry-point script execs "$@"
        argv = argv[1:]
    if not spec.has_shell or not argv:
        raise ExecNotFound(argv[0] if argv else "")
    name = argv[0]
    search = path or DEFAULT_PATH
    exe = find_executable(name, search) or find_executable(os.path.basename(name), search)
    if exe is not None:
        args = list(argv[1:])
        if os.path.basename(name) == "top" and "-b" not in args and os.path.basename(exe) != "busybox":
            args.insert(0, "-b")  # procps top needs a tty unless batch mode; busybox top (the image's) does not
        return [exe, *args]
    busybox = find_executable("busybox", search)
    if busybox is not None and _busybox_has(busybox, os.path.basename(name)):
        return [busybox, os.path.basename(name), *argv[1:]]
    raise ExecNotFound(name)


def _busybox_has(busybox: str, applet: str) -> bool:
    import subprocess

    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return applet in out.split()


def host_argv(
    spec: ImageSpec, argv: Sequence[str], *, python: str | None = None, path: str | None = None
) -> list[str]:
    """What the executor spawns (inside the task's namespaces) to run ``argv`` in ``spec``.

    Python programs run as ``python -I -S run.py --argv REF ARGV...``: ``-S`` skips site-packages
    (they use only the standard library), which halves start time and saves ~2 MB per task.
    Registered images travel as ``--spec JSON`` so the child needs no registration of its own.
    Host commands are returned as the resolved host binary and its arguments.
    """
    words = program_argv(spec, argv)
    if words is None:
        return host_command(spec, argv, path)
    exe = python or sys.executable
    if spec.builtin:
        return [exe, "-I", "-S", RUN_PY, "--argv", spec.ref, "--", *argv]
    import json

    flags = ["-I", "-S"] if (spec.module or "").startswith(_P) else ["-I"]
    return [exe, *flags, RUN_PY, "--spec", json.dumps(spec.to_dict()), "--argv", spec.ref, "--", *argv]


# --------------------------------------------------------------------------- inspect


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def image_id(spec: ImageSpec) -> str:
    """A stable ``sha256:...`` image id derived from ``name:tag`` (same on every node)."""
    return "sha256:" + _sha256(f"labctl-image:{spec.ref}")


def repo_digest(spec: ImageSpec) -> str:
    """``name@sha256:...``, stable per ``name:tag``, like a registry's manifest digest."""
    return f"{spec.name}@sha256:" + _sha256(f"labctl-manifest:{spec.ref}")


def image_inspect(image_ref: str | ImageSpec) -> dict[str, object]:
    """Docker's ``GET /images/{name}/json`` body for a catalog image."""
    spec = image_ref if isinstance(image_ref, ImageSpec) else resolve(image_ref)
    config: dict[str, object] = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "ExposedPorts": {p: {} for p in spec.exposed_ports} or None,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": list(spec.env),
        "Cmd": list(spec.cmd) or None,
        "Image": "",
        "Volumes": None,
        "WorkingDir": spec.working_dir,
        "Entrypoint": list(spec.entrypoint) or None,
        "OnBuild": None,
        "Labels": dict(spec.labels) or None,
    }
    if spec.stop_signal:
        config["StopSignal"] = spec.stop_signal
    return {
        "Id": image_id(spec),
        "RepoTags": [spec.ref],
        "RepoDigests": [repo_digest(spec)],
        "Parent": "",
        "Comment": "",
        "Created": spec.created,
        "DockerVersion": "",
        "Author": "",
        "Config": config,
        "Architecture": spec.architecture or _goarch(),
        "Os": "linux",
        "Size": spec.size,
        "VirtualSize": spec.size,
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": ["sha256:" + _sha256(f"labctl-layer:{spec.ref}")]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
