"""serde.warm compiles a class's codecs and those of the dataclasses nested in it, ahead of first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_warm_compiles_nested_codecs_in_a_fresh_process() -> None:
    code = textwrap.dedent("""
        from agents.state import serde
        from agents.state.objects import ContainerSpec, Task, TaskSpec, TaskStatus
        assert Task not in serde._codecs
        serde.warm(Task)
        missing = [c.__name__ for c in (Task, TaskSpec, ContainerSpec, TaskStatus) if c not in serde._codecs]
        assert not missing, missing
        before = dict(serde._codecs)
        Task.from_dict(Task(id="x").to_dict())
        assert serde._codecs == before, "decoding compiled more after warm"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
