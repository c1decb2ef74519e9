"""`make demo`: bring up the default lab, show it, talk to a node with the real docker CLI, tear it down.

It runs the real `labctl` commands as a student or teacher would type them, printing each one, in a
private LABCTL_HOME so it never touches labs you already have. Teardown happens even when a step fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

console = Console(highlight=False)


def _labctl() -> str:
    candidate = Path(sys.executable).with_name("labctl")
    return str(candidate) if candidate.exists() else "labctl"


def _run(argv: list[str], env: dict[str, str], check: bool = True) -> int:
    words = ["labctl", *argv[1:]] if argv[0] == _labctl() else argv
    shown = " ".join(shlex.quote(a) for a in words)
    console.print(f"\n[bold cyan]$ {shown}[/bold cyan]")
    res = subprocess.run(argv, env=env)
    if check and res.returncode != 0:
        raise SystemExit(f"demo step failed ({res.returncode}): {shown}")
    return res.returncode


def main() -> int:
    home = tempfile.mkdtemp(prefix="labctl-demo-")
    env = dict(os.environ, LABCTL_HOME=home)
    env.pop("DOCKER_HOST", None)
    labctl = _labctl()
    console.rule("[bold]labctl demo: the default classroom lab (3 managers, 2 workers) on network namespaces,"
                 " a swarm, and a graded exercise")
    try:
        _run([labctl, "up"], env)
        _run([labctl, "status"], env)
        _run([labctl, "exec", "manager1", "--", "docker", "info"], env)
        docker_host = subprocess.run([labctl, "env", "worker1"], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()[1].split("=", 1)[1]
        console.print("\n[bold cyan]$ eval $(labctl env worker1)[/bold cyan]")
        _run(["docker", "version"], dict(env, DOCKER_HOST=docker_host))
        _run([labctl, "exec", "manager1", "--", "docker", "node", "ls"], env)
        _run([labctl, "run", "smoke", "--auto", "--lab", "swarm"], env)
        _run([labctl, "grade", "smoke", "--lab", "swarm", "--out", str(Path(home) / "grades")], env)
        return 0
    finally:
        rc = _run([labctl, "down"], env, check=False)
        shutil.rmtree(home, ignore_errors=True)
        if rc == 0:
            console.rule("[bold green]demo done: the lab is gone, nothing left behind")


if __name__ == "__main__":
    sys.exit(main())
