"""Vagrant specs: fields validated before rendering, hostile values refused, rendered files valid for
`vagrant validate` (Debian's vagrant package; no VirtualBox needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from labctl import dockerengine, vagrantfile
from labctl.errors import LabError
from labctl.spec import SpecError, parse_spec


def _render(data: dict[str, object]) -> str:
    spec = parse_spec({"provider": "vagrant", **data})
    if spec.subnet is None:
        spec = spec.with_subnet(__import__("ipaddress").IPv4Network("192.168.56.0/24"))
    return vagrantfile.render(spec)


SPECS: dict[str, dict[str, object]] = {
    "default": {"name": "swarm", "managers": 3, "workers": 2},
    "custom": {"name": "room", "subnet": "192.168.59.0/24",
               "vagrant": {"box": "generic/debian12", "cpus": 2, "memory": 2048, "provider": "libvirt"},
               "nodes": [{"name": "master", "role": "manager"}, {"name": "node01", "ip": "192.168.59.20"}]},
    "single": {"name": "solo", "nodes": [{"name": "node-001", "role": "manager"}]},
    "docker": {"name": "dock", "managers": 1, "workers": 1, "executor": "docker"},
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


RUBY = shutil.which("ruby")
CAPTURE = r"""
require "json"
SCRIPTS = {}
class Anything
  def method_missing(name, *args, **kw, &blk)
    SCRIPTS[kw[:name]] = kw[:inline] if name == :provision && kw[:inline]
    blk.call(Anything.new) if blk
    Anything.new
  end

  def respond_to_missing?(*) = true
end
module Vagrant
  def self.configure(_version) = yield(Anything.new)
end
load ARGV[0]
puts JSON.generate(SCRIPTS)
"""


def _provision_scripts(text: str, tmp_path: Path) -> dict[str, str]:
    """The provisioning scripts exactly as Ruby reads the Vagrantfile (heredoc indentation rules included)."""
    (tmp_path / "Vagrantfile").write_text(text)
    res = subprocess.run([RUBY or "ruby", "-e", CAPTURE, str(tmp_path / "Vagrantfile")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    scripts: dict[str, str] = json.loads(res.stdout)
    return scripts


def _heredoc(script: str, command: str) -> str:
    """The body of the shell heredoc that follows ``command`` in ``script``."""
    start = script.index(command + " <<'LABCTL_EOF'\n") + len(command) + len(" <<'LABCTL_EOF'\n")
    return script[start:script.index("\nLABCTL_EOF\n", start) + 1]


@pytest.mark.skipif(RUBY is None, reason="needs ruby (Debian's vagrant package depends on it)")
def test_executor_docker_provisions_the_engine_on_its_own_socket(tmp_path: Path) -> None:
    scripts = _provision_scripts(_render(SPECS["docker"]), tmp_path)
    assert list(scripts) == ["labctl-base", "labctl-docker-engine"]  # the engine after the base tools
    engine = scripts["labctl-docker-engine"]
    assert not engine.startswith(" ")  # the squiggly heredoc took the template's indentation away
    config = json.loads(_heredoc(engine, f"cat > {dockerengine.CONFIG_PATH}.new"))
    assert config == dockerengine.daemon_config()
    assert config["hosts"] == ["unix:///run/docker-engine/docker.sock"]  # never /run/docker.sock: the agent's
    assert [config[k] for k in ("bridge", "iptables", "ip-forward", "ip-masq")] == ["none", False, False, False]
    assert config["data-root"].startswith("/var/lib/docker/") and config["exec-root"] == "/run/docker-engine"
    unit = _heredoc(engine, f"cat > /etc/systemd/system/{dockerengine.UNIT_NAME}.new")
    assert unit == dockerengine.UNIT and f"--config-file {dockerengine.CONFIG_PATH}" in unit
    assert "Before=labagent.service" in unit and "$MAINPID" in unit  # no Ruby or shell expansion on the way
    # Masked before the install (the package cannot start them), then the engine must answer.
    mask = "systemctl mask --now docker.service docker.socket containerd.service"
    assert engine.index(mask) < engine.index("apt-get install")
    assert "docker -H unix:///run/docker-engine/docker.sock version" in engine
    res = subprocess.run(["sh", "-n"], input=engine, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    base = scripts["labctl-base"]
    assert base.index("systemctl mask --now") < base.index("apt-get install")


@pytest.mark.skipif(RUBY is None, reason="needs ruby (Debian's vagrant package depends on it)")
def test_executor_process_provisions_no_engine(tmp_path: Path) -> None:
    text = _render(SPECS["default"])
    assert "labctl-docker-engine" not in text and "docker-engine.json" not in text
    assert list(_provision_scripts(text, tmp_path)) == ["labctl-base"]


def test_engine_files_cannot_end_the_heredocs_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dockerengine, "UNIT", "[Unit]\n  SHELL\nsystem('id')\n")
    with pytest.raises(LabError, match="engine_unit cannot be put into the Vagrantfile"):
        _render(SPECS["docker"])
