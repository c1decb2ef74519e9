"""Vagrant specs: fields validated before rendering, hostile values refused, rendered files valid for
`vagrant validate` (Debian's vagrant package; no VirtualBox needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labctl import vagrantfile
from labctl.spec import SpecError, parse_spec


def _render(data: dict[str, object]) -> str:
    spec = parse_spec({"provider": "vagrant", **data})
    if spec.subnet is None:
        spec = spec.with_subnet(__import__("ipaddress").IPv4Network("192.168.56.0/24"))
    return vagrantfile.render(spec)


SPECS = {
    "default": {"name": "swarm", "managers": 3, "workers": 2},
    "custom": {"name": "room", "subnet": "192.168.59.0/24",
               "vagrant": {"box": "generic/debian12", "cpus": 2, "memory": 2048, "provider": "libvirt"},
               "nodes": [{"name": "master", "role": "manager"}, {"name": "node01", "ip": "192.168.59.20"}]},
    "single": {"name": "solo", "nodes": [{"name": "node-001", "role": "manager"}]},
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_render_has_every_node(name: str) -> None:
    text = _render(SPECS[name])
    spec = parse_spec({"provider": "vagrant", **SPECS[name]})
    for node in spec.nodes:
        assert f"config.vm.define '{node.name}'" in text
        assert f"m.vm.hostname = '{node.name}'" in text
    assert "config.vm.box = 'bento/ubuntu-24.04'" in text or "generic/debian12" in text
    assert "nftables" in text and "python3" in text and "docker" in text


def test_custom_values_are_rendered() -> None:
    text = _render(SPECS["custom"])
    assert "vb.cpus = 2" in text and "vb.memory = 2048" in text
    assert "ip: '192.168.59.11'" in text and "ip: '192.168.59.20'" in text
    assert "vb.name = 'labctl-room-master'" in text


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"vagrant": {"box": "ubuntu'; system('id'); '"}}, "vagrant.box"),
        ({"vagrant": {"box": 'bento/#{`id`}'}}, "vagrant.box"),
        ({"vagrant": {"box": "a/b/c"}}, "vagrant.box"),
        ({"vagrant": {"box": "box\nsystem('id')"}}, "vagrant.box"),
        ({"vagrant": {"cpus": "2; system('id')"}}, "vagrant.cpus"),
        ({"vagrant": {"memory": 10**9}}, "vagrant.memory"),
        ({"vagrant": {"memory": 1024, "gui": True}}, "unknown field"),
        ({"nodes": [{"name": "x\"; `id`; \"", "role": "manager"}]}, "not a valid hostname"),
        ({"nodes": [{"name": "#{exit}", "role": "manager"}]}, "not a valid hostname"),
        ({"nodes": [{"name": "m1", "role": "manager", "ip": "10.0.0.5"}]}, "outside 192.168.56.0/21"),
        ({"subnet": "192.168.100.0/24", "managers": 1}, "outside 192.168.56.0/21"),
        ({"subnet": "10.10.0.0/24", "managers": 1}, "outside 192.168.56.0/21"),
    ],
)
def test_hostile_values_are_refused_before_rendering(data: dict[str, object], fragment: str) -> None:
    base: dict[str, object] = {"name": "evil", "provider": "vagrant", "managers": 1}
    if "nodes" in data:
        base.pop("managers")
    if "subnet" in data and "managers" in data:
        base.pop("managers")
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        parse_spec({**base, **data})


def test_renderer_refuses_unsafe_literals_even_past_the_spec() -> None:
    with pytest.raises(SpecError, match="refusing to render"):
        vagrantfile.ruby_literal("x' + `id` + '")
    with pytest.raises(SpecError, match="refusing to render"):
        vagrantfile.ruby_literal("#{1}")


def test_vagrant_fields_only_for_vagrant_and_ssh_fields_only_for_ssh() -> None:
    with pytest.raises(SpecError, match="only for provider: vagrant"):
        parse_spec({"managers": 1, "vagrant": {"box": "bento/ubuntu-24.04"}})
    with pytest.raises(SpecError, match="only for provider: ssh"):
        parse_spec({"nodes": [{"name": "a", "role": "manager", "ssh": {"address": "10.0.0.1"}}]})
    with pytest.raises(SpecError, match="via: nsenter needs provider: netns"):
        parse_spec({"provider": "vagrant", "managers": 1, "via": "nsenter"})


def test_ssh_provider_nodes() -> None:
    spec = parse_spec({"provider": "ssh", "nodes": [
        {"name": "pc1", "role": "manager", "ssh": {"address": "10.1.2.3", "user": "student", "key": "~/.ssh/id_ed25519"}},
        {"name": "pc2", "ip": "10.1.2.4", "ssh": {"address": "pc2.lab.example", "port": 2222}},
    ]})
    assert str(spec.nodes[0].ip) == "10.1.2.3"
    assert spec.agent_via == "ssh"
    with pytest.raises(SpecError, match="needs the address"):
        parse_spec({"provider": "ssh", "managers": 1})
    with pytest.raises(SpecError, match="is a name"):
        parse_spec({"provider": "ssh", "nodes": [{"name": "a", "role": "manager", "ssh": {"address": "pc.example"}}]})
    for bad in ({"address": "10.0.0.1; rm -rf /"}, {"address": "h", "user": "root -o ProxyCommand=x"},
                {"address": "h", "key": "relative/key"}, {"address": "h", "key": "/k\nHost *"}):
        with pytest.raises(SpecError):
            parse_spec({"provider": "ssh", "nodes": [{"name": "a", "role": "manager", "ip": "10.0.0.1", "ssh": bad}]})


VAGRANT = shutil.which("vagrant")


@pytest.mark.skipif(VAGRANT is None, reason="needs Debian's vagrant package (make test installs it)")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_vagrantfiles_pass_vagrant_validate(name: str, tmp_path: Path) -> None:
    (tmp_path / "Vagrantfile").write_text(_render(SPECS[name]))
    res = subprocess.run([VAGRANT or "vagrant", "validate", "--ignore-provider"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=180,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAGRANT_HOME": str(tmp_path / ".vd")})
    assert res.returncode == 0, res.stdout + res.stderr
