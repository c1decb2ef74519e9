"""The vagrant provider's python-vagrant calls against a stand-in `vagrant` executable (no VirtualBox):
up for all machines, per-machine ssh-config parsed into SSH targets, status, halt, destroy."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.providers import vagrant as vagrant_provider
from labctl.providers.vagrant import VagrantProvider
from labctl.registry import LabRecord
from labctl.spec import parse_spec
from tests.labfixtures import lab_home

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VagrantProvider]:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VAGRANT_LOG", str(tmp_path / "calls.log"))
    for home in lab_home(tmp_path):
        spec = parse_spec({"name": "vlab", "provider": "vagrant", "managers": 2, "workers": 1})
        spec = spec.with_subnet(ipaddress.IPv4Network("192.168.57.0/24"))
        yield VagrantProvider(LabRecord(spec, "creating"))
        assert home.exists()


def _calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]


def test_create_status_halt_destroy(provider: VagrantProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: list[list[str] | None] = []
    monkeypatch.setattr(VagrantProvider, "push_agents",
                        lambda self, nodes=None, progress=None, connect_retry=0.0: pushed.append(nodes) or [])
    monkeypatch.setattr(VagrantProvider, "wait_agents", lambda self, nodes: None)
    provider.create()
    assert (provider.root / "Vagrantfile").exists()
    calls = _calls(tmp_path)
    assert calls[0] == ["up", "--provider=virtualbox"]  # one `vagrant up` for all: parallel where allowed
    assert [c for c in calls if c[0] == "ssh-config"] == [["ssh-config", n] for n in ("manager1", "manager2", "worker1")]
    assert pushed == [None]
    targets = provider.targets()
    assert [(t.node, t.host, t.port, t.user) for t in targets] == [
        ("manager1", "127.0.0.1", 2222, "vagrant"), ("manager2", "127.0.0.1", 2223, "vagrant"),
        ("worker1", "127.0.0.1", 2224, "vagrant"),
    ]
    assert targets[1].key == provider.root / ".vagrant/machines/manager2/virtualbox/private_key"
    config = provider.ssh.config.read_text()
    assert "Host worker1\n  HostName 127.0.0.1\n  Port 2224\n  User vagrant" in config
    assert "StrictHostKeyChecking accept-new" in config
    assert provider.node_states() == {"manager1": "running", "manager2": "running", "worker1": "running"}

    provider.halt("worker1")
    assert _calls(tmp_path)[-1] == ["halt", "worker1"]
    assert provider.node_states()["worker1"] == "halted"
    statuses = {s.name: s.state for s in provider.status() if s.name == "worker1"}
    assert statuses == {"worker1": "halted"}

    provider.start("worker1")
    tail = _calls(tmp_path)[-3:]
    assert ["up", "worker1", "--provider=virtualbox"] in tail and ["ssh-config", "worker1"] in tail
    assert pushed[-1] == ["worker1"]

    assert provider.destroy() == []
    assert _calls(tmp_path)[-1] == ["destroy", "--force"]
    assert not provider.record.dir.exists()


def test_failed_up_destroys(provider: VagrantProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: VagrantProvider, *a: object, **k: object) -> list[object]:
        raise vagrant_provider.LabError("push failed")

    monkeypatch.setattr(VagrantProvider, "push_agents", boom)
    with pytest.raises(vagrant_provider.LabError, match="push failed"):
        provider.create()
    assert _calls(tmp_path)[-1] == ["destroy", "--force"]
