"""Command-line parsing (one clear line, exit 2) and the unix-socket rules (stale replaced, live kept)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from agents.api.server import SocketInUse, bind_unix_socket
from agents.config import AgentConfig, ConfigError, parse_args


def test_defaults() -> None:
    cfg = parse_args([])
    assert cfg.node_name == os.uname().nodename
    assert cfg.state_dir == Path("/var/lib/docker")
    assert cfg.socket_path == Path("/run/docker.sock")
    assert cfg.addr is None and cfg.log_level == "info"
    assert cfg.log_file == Path("/var/lib/docker/labagent.log")


def test_flags(tmp_path: Path) -> None:
    cfg = AgentConfig.from_args(
        ["--node-name", "worker-2", "--state-dir", str(tmp_path / "s"), "--socket", "rel.sock",
         "--addr", "192.168.56.12", "--log-level", "DEBUG"]
    )
    assert cfg.node_name == "worker-2" and cfg.addr == "192.168.56.12" and cfg.debug
    assert cfg.state_dir == tmp_path / "s"
    assert cfg.socket_path.is_absolute() and cfg.socket_path.name == "rel.sock"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--addr", "not-an-ip"], "invalid --addr 'not-an-ip'"),
        (["--log-level", "loud"], "invalid choice: 'loud'"),
        (["--node-name", "bad name"], "invalid node name 'bad name'"),
        (["--node-name", ""], "invalid node name ''"),
        (["--socket", "/tmp/" + "x" * 200], "too long for a unix socket"),
        (["--state-dir", ""], "--state-dir must not be empty"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("labagent: error: ")
    assert fragment in err


def test_config_validates_when_built_directly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AgentConfig(node_name="-x", state_dir=tmp_path, socket_path=tmp_path / "s")


def test_socket_mode_and_stale_socket_replaced(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as after a crash
    sock = bind_unix_socket(path)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    finally:
        sock.close()


def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(SocketInUse, match="already listening"):
            bind_unix_socket(path)
    finally:
        live.close()


def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    path.write_text("precious")
    with pytest.raises(SocketInUse, match="not a socket"):
        bind_unix_socket(path)
    assert path.read_text() == "precious"
