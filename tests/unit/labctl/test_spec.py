"""lab.yaml validation: good specs expand as documented, bad ones fail with one line naming the field."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from labctl.spec import SpecError, default_spec, load_spec, parse_spec, subnet_candidates


def test_default_lab_is_three_managers_two_workers() -> None:
    spec = default_spec()
    assert spec.name == "swarm"
    assert spec.provider == "netns"
    assert spec.swarm == "form"
    assert [(n.name, n.role) for n in spec.nodes] == [
        ("manager1", "manager"), ("manager2", "manager"), ("manager3", "manager"),
        ("worker1", "worker"), ("worker2", "worker"),
    ]


def test_addresses_start_at_11_and_skip_given_ones() -> None:
    spec = parse_spec({
        "name": "room", "subnet": "192.168.60.0/24",
        "nodes": [
            {"name": "master", "role": "manager"},
            {"name": "node01", "ip": "192.168.60.12", "labels": {"ROOM": "N1"}},
            {"name": "node02"},
        ],
    })
    assert [str(n.ip) for n in spec.nodes] == ["192.168.60.11", "192.168.60.12", "192.168.60.13"]
    assert spec.nodes[1].labels == {"ROOM": "N1"}
    assert spec.host_address == ipaddress.IPv4Address("192.168.60.1")


def test_tutorial_node_names_are_accepted() -> None:
    names = ["node-001", "master", "node01", "worker03", "manager1"]
    spec = parse_spec({"nodes": [{"name": n, "role": "manager"} for n in names]})
    assert [n.name for n in spec.nodes] == names


def test_with_subnet_keeps_everything_else() -> None:
    spec = default_spec().with_subnet(subnet_candidates()[1])
    assert str(spec.subnet) == "192.168.57.0/24"
    assert str(spec.nodes[4].ip) == "192.168.57.15"
    assert spec.with_subnet(spec.subnet) == spec


def test_subnet_candidates_walk_upward() -> None:
    c = subnet_candidates()
    assert [str(x) for x in c[:3]] == ["192.168.56.0/24", "192.168.57.0/24", "192.168.58.0/24"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "Swarm"}, "name:"),
        ({"name": "a" * 32}, "name:"),
        ({"provider": "docker"}, "provider: must be"),
        ({"swarm": "maybe"}, "swarm: must be"),
        ({"subnet": "192.168.56.0/33"}, "subnet:"),
        ({"subnet": "192.168.56.7/24"}, "subnet:"),
        ({"subnet": "8.8.8.0/24", "managers": 1}, "not a private range"),
        ({"subnet": "10.0.0.0/8", "managers": 1}, "prefix length"),
        ({"nodes": [{"name": "m", "role": "boss"}]}, "nodes[0].role"),
        ({"nodes": [{"name": "bad_name", "role": "manager"}]}, "nodes[0].name"),
        ({"nodes": [{"name": "m", "role": "manager", "cpu": 2}]}, "nodes[0].cpu: unknown field"),
        ({"nodes": [{"name": "m", "role": "manager"}, {"name": "M"}]}, "used twice"),
        ({"nodes": [{"name": "w"}]}, "needs at least one node with role: manager"),
        ({"nodes": []}, "at least one node"),
        ({"managers": 1, "nodes": [{"name": "x"}]}, "not both"),
        ({"managers": -1}, "managers:"),
        ({"workerz": 2}, "workerz: unknown field"),
        ({"subnet": "192.168.56.0/24", "nodes": [{"name": "m", "role": "manager", "ip": "192.168.57.3"}]},
         "not in subnet"),
        ({"subnet": "192.168.56.0/24", "nodes": [{"name": "m", "role": "manager", "ip": "192.168.56.1"}]},
         "reserved"),
        ({"subnet": "192.168.56.0/24", "nodes": [{"name": "m", "role": "manager", "ip": "192.168.56.20"},
                                                  {"name": "n", "ip": "192.168.56.20"}]}, "already used"),
        ({"nodes": [{"name": "m", "role": "manager", "labels": {"bad key": "x"}}]}, "label key"),
        ({"nodes": [{"name": "m" * 63, "role": "manager"}], "name": "a" * 31}, "socket path"),
        ({"timing": {"heartbeat_ms": 0}, "managers": 1}, "timing.heartbeat_ms"),
    ],
)
def test_bad_specs_name_the_field(data: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "lab.yaml")
    message = str(info.value)
    assert message.startswith("lab.yaml: ")
    assert needle in message
    assert "\n" not in message


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="top level must be a mapping"):
        parse_spec(["a"], "lab.yaml")


def test_load_spec_reports_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_load_spec_from_file(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("name: dca\nmanagers: 1\nworkers: 2\nswarm: bare\n")
    spec = load_spec(f)
    assert spec.name == "dca" and spec.swarm == "bare"
    assert [n.name for n in spec.nodes] == ["manager1", "worker1", "worker2"]
    assert load_spec(None) == default_spec()


def test_executor_defaults_to_process_and_docker_needs_a_vm_or_ssh_provider() -> None:
    assert default_spec().executor == "process"
    vm = parse_spec({"provider": "vagrant", "managers": 1, "executor": "docker"})
    assert vm.executor == "docker"
    ssh = parse_spec({"provider": "ssh", "executor": "docker",
                      "nodes": [{"name": "pc1", "role": "manager", "ssh": {"address": "10.1.2.3"}}]})
    assert ssh.executor == "docker"
    assert vm.with_subnet(ipaddress.IPv4Network("192.168.56.0/24")).executor == "docker"  # survives the record
    with pytest.raises(SpecError, match=r"^lab spec: executor: docker needs provider vagrant or ssh: netns nodes"):
        parse_spec({"managers": 1, "executor": "docker"})
    with pytest.raises(SpecError, match="executor: docker needs provider vagrant or ssh"):
        parse_spec({"managers": 1, "executor": "docker", "via": "ssh"})  # an sshd in a namespace is no VM
    with pytest.raises(SpecError, match=r"^lab spec: executor: must be 'process' or 'docker'$"):
        parse_spec({"provider": "vagrant", "managers": 1, "executor": "podman"})
    assert parse_spec({"managers": 1, "executor": "process"}).executor == "process"
