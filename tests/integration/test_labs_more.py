"""The labs for tutorials 003 and 004 solved by `labctl run LAB --auto --down` through the real CLI, in a
private LABCTL_HOME; every check of every lab must pass, and nothing may be left behind on the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_labs import assert_every_check_passed
from tests.labfixtures import leftovers

LABCTL = str(Path(sys.executable).with_name("labctl"))
LABS = {
    "swarmkit-basics": ["docker1", "docker2", "docker3"],
    "dca-prep": ["master", "node01", "node02"],
}


@pytest.mark.netns
@pytest.mark.timeout(300)
@pytest.mark.parametrize("lab_id", sorted(LABS))
def test_lab_auto_passes_and_cleans_up(lab_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_HOME", str(tmp_path / "home"))  # leftovers() reads the same home
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    try:
        res = subprocess.run([LABCTL, "run", lab_id, "--auto", "--down"], capture_output=True, text=True,
                             env=env, timeout=280)
        assert res.returncode == 0, f"labctl run {lab_id} --auto -> {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stdout + res.stderr
        assert_every_check_passed(res.stdout)
    finally:
        left = leftovers(lab_id, LABS[lab_id])
        if left:  # do not leak into the next test, but still fail
            subprocess.run([LABCTL, "down", lab_id], capture_output=True, env=env, timeout=120)
    assert left == [], left
