"""Reference normalisation, the catalog, Docker's entrypoint/cmd rules, inspect and registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agents.worker.images import catalog
from agents.worker.images.catalog import (
    ExecNotFound,
    ImageError,
    InvalidReference,
    NoSuchImage,
    build_argv,
    image_inspect,
    normalize,
    register,
    resolve,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", ("nginx", "latest")),
        ("nginx:latest", ("nginx", "latest")),
        ("nginx:1.25", ("nginx", "1.25")),
        ("library/nginx", ("nginx", "latest")),
        ("docker.io/library/nginx:1.25", ("nginx", "1.25")),
        ("index.docker.io/library/redis:7", ("redis", "7")),
        ("nginx@sha256:" + "a" * 64, ("nginx", "latest")),
        ("nginx:1.25@sha256:" + "b" * 64, ("nginx", "1.25")),
        ("docker.io/traefik/whoami:v1.10", ("traefik/whoami", "v1.10")),
        ("localhost:5000/app:1", ("localhost:5000/app", "1")),
    ],
)
def test_normalize(ref: str, expected: tuple[str, str]) -> None:
    assert normalize(ref) == expected


@pytest.mark.parametrize("ref", ["", "nginx:", "Nginx", "ngi nx", "nginx@", "/nginx", "nginx:-bad"])
def test_invalid_reference(ref: str) -> None:
    with pytest.raises(InvalidReference, match="invalid reference format"):
        normalize(ref)


def test_unknown_image_is_dockers_error() -> None:
    with pytest.raises(NoSuchImage) as info:
        resolve("foo")
    assert str(info.value) == "No such image: foo:latest"
    assert isinstance(info.value, ImageError)
    with pytest.raises(NoSuchImage, match=r"No such image: ghcr.io/x/y:2"):
        resolve("ghcr.io/x/y:2")


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("nginx:1.25", "1.25.5"),
        ("nginx:1.25-alpine", "1.25.5"),
        ("nginx:1.24.0", "1.24.0"),
        ("nginx", "1.27.4"),
        ("nginx:alpine", "1.27.4"),
        ("nginx:stable", "1.26.3"),
        ("httpd:2.4", "2.4.62"),
        ("httpd:alpine", "2.4.62"),
        ("redis:7.2", "7.2.6"),
        ("redis:6", "6.2.16"),
        ("redis:alpine", "7.4.1"),
        ("mysql:5.7", "5.7.44"),
        ("mysql:8.0", "8.0.40"),
    ],
)
def test_versions_follow_the_tag(ref: str, version: str) -> None:
    assert resolve(ref).version == version


def test_real_image_configs() -> None:
    nginx = resolve("nginx:1.25")
    assert nginx.entrypoint == ("/docker-entrypoint.sh",)
    assert nginx.cmd == ("nginx", "-g", "daemon off;")
    assert nginx.exposed_ports == ("80/tcp",)
    assert nginx.stop_signal == "SIGQUIT"
    assert "NGINX_VERSION=1.25.5" in nginx.env
    assert resolve("httpd").cmd == ("httpd-foreground",)
    redis = resolve("redis")
    assert (redis.entrypoint, redis.cmd, redis.working_dir) == (("docker-entrypoint.sh",), ("redis-server",), "/data")
    assert resolve("mysql:5.7").exposed_ports == ("3306/tcp", "33060/tcp")
    assert resolve("alpine").cmd == ("/bin/sh",)
    assert resolve("busybox").cmd == ("sh",)
    assert resolve("traefik/whoami").entrypoint == ("/whoami",)
    assert resolve("sposigor/app-flask-teste:1").exposed_ports == ("5000/tcp",)
    assert resolve("drhelius/helloworld-node-microservice").exposed_ports == ("8080/tcp",)


# ---- Docker's entrypoint/cmd merge


def test_default_argv_is_entrypoint_plus_cmd() -> None:
    assert build_argv(resolve("nginx")) == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    assert build_argv(resolve("alpine")) == ["/bin/sh"]


def test_args_replace_cmd_and_keep_entrypoint() -> None:
    assert build_argv(resolve("nginx"), args=["nginx", "-v"]) == ["/docker-entrypoint.sh", "nginx", "-v"]
    assert build_argv(resolve("alpine"), args=["ping", "-c", "1", "x"]) == ["ping", "-c", "1", "x"]
    assert build_argv(resolve("redis"), cmd_override=["redis-server", "--appendonly", "yes"]) == [
        "docker-entrypoint.sh",
        "redis-server",
        "--appendonly",
        "yes",
    ]
    # positional args win over an API Cmd
    assert build_argv(resolve("alpine"), cmd_override=["a"], args=["b"]) == ["b"]


def test_entrypoint_override_drops_image_cmd() -> None:
    assert build_argv(resolve("nginx"), entrypoint_override=["sleep"]) == ["sleep"]
    assert build_argv(resolve("nginx"), ["sleep"], None, ["10"]) == ["sleep", "10"]
    assert build_argv(resolve("traefik/whoami"), args=["--port", "8080"]) == ["/whoami", "--port", "8080"]


def test_empty_entrypoint_override_clears_it() -> None:
    assert build_argv(resolve("redis"), [""], None, ["redis-cli", "ping"]) == ["redis-cli", "ping"]
    with pytest.raises(ImageError, match="No command specified"):
        build_argv(resolve("nginx"), [""])


def test_wrappers_and_dash_args_reach_the_program() -> None:
    redis = resolve("redis")
    assert catalog.program_argv(redis, ["docker-entrypoint.sh", "--appendonly", "yes"]) == [
        "redis-server",
        "--appendonly",
        "yes",
    ]
    assert catalog.program_argv(redis, ["docker-entrypoint.sh", "redis-server"]) == ["redis-server"]
    # any other command is a host command, as in the image's shell
    assert catalog.program_argv(redis, ["docker-entrypoint.sh", "redis-cli", "ping"]) is None
    assert catalog.program_argv(resolve("alpine"), ["/bin/sh"]) is None


def test_host_command_maps_to_host_binaries() -> None:
    argv = catalog.host_command(resolve("alpine"), ["sh", "-c", "true"])
    assert os.path.basename(argv[0]) == "sh" and argv[1:] == ["-c", "true"]
    with pytest.raises(ExecNotFound, match=r'exec: "nosuchcmd": executable file not found in \$PATH'):
        catalog.host_command(resolve("alpine"), ["nosuchcmd"])
    with pytest.raises(ExecNotFound):  # FROM scratch: no shell, no tools
        catalog.host_argv(resolve("traefik/whoami"), ["sh"])


def test_host_argv_runs_programs_with_a_fast_interpreter() -> None:
    argv = catalog.host_argv(resolve("nginx:1.25"), build_argv(resolve("nginx:1.25")), python="/py")
    assert argv[:4] == ["/py", "-I", "-S", catalog.RUN_PY]
    assert argv[4:] == ["--argv", "nginx:1.25", "--", "/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]


# ---- inspect


def test_image_inspect_shape() -> None:
    data = image_inspect("docker.io/library/nginx:1.25")
    assert data["Id"] == image_inspect("nginx:1.25")["Id"]
    assert str(data["Id"]).startswith("sha256:") and len(str(data["Id"])) == 71
    assert data["Id"] != image_inspect("nginx:1.24")["Id"]
    assert data["RepoTags"] == ["nginx:1.25"]
    digests = data["RepoDigests"]
    assert isinstance(digests, list) and digests[0].startswith("nginx@sha256:")
    cfg = data["Config"]
    assert isinstance(cfg, dict)
    assert cfg["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert cfg["Entrypoint"] == ["/docker-entrypoint.sh"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}}
    assert cfg["StopSignal"] == "SIGQUIT"
    assert any(e.startswith("PATH=") for e in cfg["Env"])
    assert data["Os"] == "linux" and data["Architecture"] and isinstance(data["Size"], int)
    assert image_inspect("alpine")["Config"]["Entrypoint"] is None  # type: ignore[index]
    json.dumps(data)
    with pytest.raises(NoSuchImage):
        image_inspect("nope:1")


# ---- registration


@pytest.fixture
def registered() -> Iterator[None]:
    yield
    catalog.unregister("acme/echo")
    catalog.unregister("acme/sleeper")


def test_register_module_image(registered: None) -> None:
    spec = register(
        "acme/echo", module="agents.worker.images.programs.hello", cmd=["hello"], ports=["9000"], env={"A": "1"}
    )
    assert spec.ref == "acme/echo:latest"
    got = resolve("docker.io/acme/echo:3")
    assert got.tag == "3" and got.module == "agents.worker.images.programs.hello"
    assert image_inspect("acme/echo:3")["Config"]["ExposedPorts"] == {"9000/tcp": {}}  # type: ignore[index]
    argv = catalog.host_argv(got, build_argv(got))
    assert "--spec" in argv  # the child gets the spec; it need not re-register
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "Hello from Docker!" in out


def test_register_command_image_and_catalog_file(registered: None, tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "images.json")
    with open(path, "w") as fh:
        json.dump({"images": [{"name": "acme/sleeper", "command": ["sleep", "infinity"], "tags": ["1"]}]}, fh)
    specs = catalog.load_catalog_file(path)
    assert specs[0].runner == "host" and specs[0].cmd == ("sleep", "infinity")
    assert build_argv(resolve("acme/sleeper:1")) == ["sleep", "infinity"]
    with pytest.raises(NoSuchImage):
        resolve("acme/sleeper:2")
    with pytest.raises(ValueError):
        register("acme/bad")


def test_run_entry_point_reports_unknown_image() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agents.worker.images.run", "foo"], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert proc.returncode == 125
    assert "No such image: foo:latest" in proc.stderr


def test_agents_do_not_import_labctl() -> None:
    code = (
        "import sys; import agents.worker.images.run, agents.worker.images.programs.mysql, "
        "agents.worker.images.programs.redis; assert not any(m.startswith('labctl') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=30)
