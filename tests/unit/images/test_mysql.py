"""mysql: the image's password rules, and the real Debian mysql client against the server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agents.worker.images.programs import mysql as mysql_prog
from tests.unit.images.conftest import StartFn

CLIENT = shutil.which("mysql") or shutil.which("mariadb")
needs_client = pytest.mark.skipif(
    CLIENT is None, reason="needs the mysql client binary (Debian package default-mysql-client)"
)


def client(port: int, password: str | None, sql: str, user: str = "root", *extra: str) -> subprocess.CompletedProcess[str]:
    assert CLIENT is not None
    argv = [CLIENT, "-h", "127.0.0.1", "-P", str(port), f"-u{user}"]
    if password is not None:
        argv.append(f"-p{password}")
    return subprocess.run([*argv, *extra, "-e", sql], capture_output=True, text=True, timeout=20)


def test_native_password_scramble() -> None:
    salt = bytes(range(1, 21))
    token = mysql_prog.scramble_native("secret", salt)
    assert len(token) == 20 and token != mysql_prog.scramble_native("other", salt)
    assert mysql_prog.scramble_native("", salt) == b""


def test_no_password_option_fails_like_the_image(start: StartFn) -> None:
    task = start("mysql:5.7", listen=False, env={"MYSQL_ROOT_PASSWORD": "", "MYSQL_ALLOW_EMPTY_PASSWORD": ""})
    assert task.proc.wait(20) == 1
    err = task.stderr
    assert "[ERROR] [Entrypoint]: Database is uninitialized and password option is not specified" in err
    for name in ("MYSQL_ROOT_PASSWORD", "MYSQL_ALLOW_EMPTY_PASSWORD", "MYSQL_RANDOM_ROOT_PASSWORD"):
        assert f"- {name}" in err


@needs_client
def test_login_and_databases(start: StartFn) -> None:
    task = start("mysql:5.7", env={"MYSQL_ROOT_PASSWORD": "s3cret"})
    task.wait_for("ready for connections", stream="stderr")
    ok = client(task.port, "s3cret", "SELECT 1; SELECT VERSION(); select @@version_comment limit 1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split("\n")[:6] == ["1", "1", "VERSION()", "5.7.44", "@@version_comment", "MySQL Community Server (GPL)"]
    out = client(task.port, "s3cret", "CREATE DATABASE shop; SHOW DATABASES;")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Database", "information_schema", "mysql", "performance_schema", "shop", "sys"]
    out = client(task.port, "s3cret", "CREATE DATABASE shop")
    assert "ERROR 1007 (HY000) at line 1: Can't create database 'shop'; database exists" in out.stderr
    out = client(
        task.port,
        "s3cret",
        "USE shop; CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20));"
        "INSERT INTO items (name) VALUES ('pen'), ('cup'); SELECT id, name FROM items WHERE name = 'cup'; "
        "SELECT DATABASE()",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["id", "name", "2", "cup", "DATABASE()", "shop"]
    out = client(task.port, "s3cret", "DROP DATABASE shop; SHOW DATABASES")
    assert "shop" not in out.stdout
    out = client(task.port, "s3cret", "USE nope")
    assert "ERROR 1049 (42000)" in out.stderr and "Unknown database 'nope'" in out.stderr
    assert task.stop() == 0
    assert "mysqld: Shutdown complete" in task.stderr


@needs_client
def test_interactive_style_session(start: StartFn) -> None:
    """Statements on stdin, as a student types them (batch mode reads them one by one)."""
    task = start("mysql:5.7", env={"MYSQL_ROOT_PASSWORD": "pw"})
    assert CLIENT is not None
    proc = subprocess.run(
        [CLIENT, "-h", "127.0.0.1", "-P", str(task.port), "-uroot", "-ppw", "-t"],
        input="create database x;\nuse x\nshow tables;\nstatus\nselect 1+1;\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| 1+1 |" in proc.stdout and "Current database:\tx" in proc.stdout


@needs_client
def test_wrong_password(start: StartFn) -> None:
    task = start("mysql:5.7", env={"MYSQL_ROOT_PASSWORD": "right"})
    out = client(task.port, "wrong", "SELECT 1")
    assert out.returncode == 1
    assert "ERROR 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)" in out.stderr
    out = client(task.port, None, "SELECT 1")
    assert "(using password: NO)" in out.stderr


@needs_client
def test_password_from_secret_file(start: StartFn, tmp_path: Path) -> None:
    secret = tmp_path / "db_root_password"
    secret.write_text("from-file\n")
    task = start("mysql:5.7", env={"MYSQL_ROOT_PASSWORD_FILE": str(secret)})
    assert client(task.port, "from-file", "SELECT 1").returncode == 0
    assert client(task.port, "from-file\n", "SELECT 1").returncode == 1


@needs_client
def test_empty_random_password_and_app_user(start: StartFn) -> None:
    task = start("mysql:5.7", env={"MYSQL_ALLOW_EMPTY_PASSWORD": "yes"})
    assert client(task.port, None, "SELECT 1").returncode == 0
    task = start(
        "mysql:5.7",
        env={"MYSQL_RANDOM_ROOT_PASSWORD": "1", "MYSQL_DATABASE": "app", "MYSQL_USER": "u", "MYSQL_PASSWORD": "p"},
    )
    task.wait_for("GENERATED ROOT PASSWORD: ")
    generated = task.stdout.split("GENERATED ROOT PASSWORD: ")[1].split("\n")[0]
    assert client(task.port, generated, "SELECT 1").returncode == 0
    out = client(task.port, "p", "SHOW DATABASES", "u")
    assert out.stdout.split() == ["Database", "app", "information_schema"]
    assert "ERROR 1044 (42000)" in client(task.port, "p", "CREATE DATABASE other", "u").stderr


def test_mysql8_tag_speaks_8(start: StartFn) -> None:
    task = start("mysql:8.0", env={"MYSQL_ROOT_PASSWORD": "pw"})
    task.wait_for("ready for connections", stream="stderr")
    assert "Version: '8.0.40'" in task.stderr
