"""What a stop sends first (`base.stop_signal`) and how a container's Env lands (`catalog.overlay_env`),
shared by the swarm worker, standalone containers and the console runner."""

from __future__ import annotations

import signal

import pytest

from agents.state.objects import ContainerSpec
from agents.worker.executor import base
from agents.worker.images import catalog


@pytest.mark.parametrize(
    ("spec", "override", "want"),
    [
        (ContainerSpec(image="alpine"), None, signal.SIGTERM),  # nothing set anywhere
        (ContainerSpec(image="nginx"), None, signal.SIGQUIT),  # the image's StopSignal
        (ContainerSpec(image="nginx", stop_signal="SIGUSR1"), None, signal.SIGUSR1),  # the container's wins
        (ContainerSpec(image="nginx", stop_signal="USR1"), "9", signal.SIGKILL),  # docker stop --signal wins
        (ContainerSpec(image="nginx"), 2, signal.SIGINT),
        (ContainerSpec(image="alpine", stop_signal="NOSUCH"), None, signal.SIGTERM),  # not a signal
        (ContainerSpec(image="no/such-image"), None, signal.SIGTERM),  # unknown image: no image default
    ],
)
def test_stop_signal(spec: ContainerSpec, override: str | int | None, want: int) -> None:
    assert base.stop_signal(spec, override) == want


def test_overlay_env_sets_overrides_and_passes_bare_names_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCT_FROM_AGENT", "agent value")
    monkeypatch.delenv("LCT_NOT_SET", raising=False)
    env = {"PATH": "/bin", "A": "image"}
    catalog.overlay_env(env, ["A=container", "B=x=y", "EMPTY=", "LCT_FROM_AGENT", "LCT_NOT_SET"])
    assert env == {"PATH": "/bin", "A": "container", "B": "x=y", "EMPTY": "", "LCT_FROM_AGENT": "agent value"}
