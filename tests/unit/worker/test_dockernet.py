"""How the docker executor finds a container's network namespace from the pid the engine reports: directly
when the engine shares the agent's pid namespace (a VM), by NSpid chain and cgroup when it does not (an
engine in a pid namespace of its own), never a recycled pid. /proc is faked here; the real one is used by
tests/integration/test_docker_executor.py and test_push_docker_engine.py (engines in their own pid namespace)."""

from __future__ import annotations

import pytest

from agents.worker.executor import dockernet

CID = "c0ffee" * 10 + "abcd"


def _fake_proc(monkeypatch: pytest.MonkeyPatch, procs: dict[int, tuple[list[int], str]]) -> None:
    """pid -> (NSpid chain, cgroup file text)."""
    def read(path: str) -> str:
        _, _, pid, name = path.split("/")
        if int(pid) not in procs:
            return ""
        chain, cgroup = procs[int(pid)]
        return cgroup if name == "cgroup" else "Name:\tsh\nNSpid:\t" + "\t".join(map(str, chain)) + "\n"

    monkeypatch.setattr(dockernet, "_read", read)
    monkeypatch.setattr(dockernet, "_pids", lambda: list(procs))


def test_same_pid_namespace_is_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_proc(monkeypatch, {4242: ([4242], f"0::/system.slice/docker-{CID}.scope\n")})
    assert dockernet.task_netns(4242, CID) == "/proc/4242/ns/net"


def test_engine_in_its_own_pid_namespace_is_found_by_nspid_and_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_proc(monkeypatch, {
        17: ([17], "0::/user.slice\n"),  # our pid 17: some other process (the engine said 17, in its namespace)
        9001: ([9001, 12, 1], "0::/lab/other-container\n"),  # the same inner pid, another container
        9002: ([9002, 17, 1], f"12:memory:/lcd-x/{CID}\n0::/lcd-x/{CID}\n"),
    })
    assert dockernet.task_netns(17, CID) == "/proc/9002/ns/net"


def test_a_gone_or_recycled_pid_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_proc(monkeypatch, {17: ([17], "0::/user.slice\n"), 9001: ([9001, 17, 1], "0::/other/abc\n")})
    assert dockernet.task_netns(17, CID) is None
    assert dockernet.task_netns(0, CID) is None
