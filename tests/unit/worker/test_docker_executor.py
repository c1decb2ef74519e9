"""The Docker-engine executor: runs only where a real engine answers (a VM lab, or dockerd started here)."""

from __future__ import annotations

import asyncio
import os

import pytest

from agents.worker.executor.docker import engine_reachable

from .fakes import FakeSession, assign, make_task

ENGINE = os.environ.get("LABCTL_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
IMAGE = os.environ.get("LABCTL_TEST_DOCKER_IMAGE", "labctl-test-rootfs:latest")
_reason = engine_reachable(ENGINE)
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"needs a Docker engine: {_reason}")


def test_lifecycle_exit_codes_and_rejection() -> None:
    from agents.worker.agent import Worker
    from agents.worker.executor.docker import DockerExecutor

    async def body() -> None:
        s = FakeSession()
        w = Worker("/tmp", s, DockerExecutor(ENGINE))
        await w.apply(assign([
            make_task("ok", image=IMAGE, args=["sh", "-c", "echo hi"]),
            make_task("bad", image=IMAGE, args=["sh", "-c", "exit 3"], slot=2),
            make_task("nope", image="nosuch/image", slot=3),
        ]))
        assert (await s.wait("ok", "complete", timeout=30))["exit_code"] == 0
        assert (await s.wait("bad", "failed", timeout=30))["err"] == "task: non-zero exit (3)"
        assert (await s.wait("nope", "rejected", timeout=30))["err"] == "No such image: nosuch/image:latest"
        assert [e.data async for e in w.logs("ok")] == [b"hi\n"]
        await w.shutdown_tasks()
        await w.stop()

    asyncio.run(body())
