"""The lab spec (`lab.yaml`): what a teacher writes, validated before anything is created.

Validation is strict (unknown keys are errors) because a typo in a classroom spec should fail loudly at
`labctl up`, not produce a lab that silently differs from the exercise. Every error names its field.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labctl.errors import UsageError
from labctl.yamlfile import read_yaml

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# RFC 1123 host label: what the tutorials use (node-001, master, node01, worker03).
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
FIRST_NODE_HOST = 11  # node addresses start at .11, as in the Vagrant labs the tutorials use
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes including the NUL
RUNTIME_ROOT = "/run/labctl"
DEFAULT_SUBNET_BASE = ipaddress.IPv4Network("192.168.56.0/24")
# VirtualBox (>= 6.1.28) accepts host-only addresses only in 192.168.56.0/21 unless /etc/vbox/networks.conf
# says otherwise; refusing others here beats a cryptic failure half-way through `vagrant up`.
VAGRANT_RANGE = ipaddress.IPv4Network("192.168.56.0/21")
DEFAULT_BOX = "bento/ubuntu-24.04"  # Canonical publishes no Vagrant boxes after 22.04
BOX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSH_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
KEY_PATH_RE = re.compile(r"^~?/[A-Za-z0-9._/+@-]+$")

Role = Literal["manager", "worker"]


class SpecError(UsageError):
    """A lab spec that cannot be used; the message names the field and says what is wrong (exit code 2)."""


class NodeSSHSpec(BaseModel):
    """How labctl reaches an existing machine (provider: ssh). Values end up on ssh command lines and in
    an ssh_config file, so each is checked against a narrow pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str = "root"
    key: str | None = None  # private key file; None: the lab's own key (labctl prints its public half)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not SSH_HOST_RE.match(v):
            raise ValueError(f"{v!r} is not a host name or IPv4 address")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not SSH_USER_RE.match(v):
            raise ValueError(f"{v!r} is not a valid user name (lowercase letters, digits, '_', '-')")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and (not KEY_PATH_RE.match(v) or "/../" in v + "/"):
            raise ValueError(f"{v!r} must be an absolute path or start with ~/ (letters, digits, . _ / + @ -)")
        return v


class VagrantSpec(BaseModel):
    """The VMs of a vagrant lab; every field is rendered into the Vagrantfile, hence the strict checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box: str = DEFAULT_BOX
    cpus: int = Field(1, ge=1, le=32)
    memory: int = Field(1024, ge=256, le=262_144, description="MiB per VM")
    provider: Literal["virtualbox", "libvirt"] = "virtualbox"

    @field_validator("box")
    @classmethod
    def _box(cls, v: str) -> str:
        if len(v) > 100 or not BOX_RE.match(v):
            raise ValueError(f"{v!r} is not a box name like bento/ubuntu-24.04 (letters, digits, '.', '_', '-', one '/')")
        return v


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role = "worker"
    ip: ipaddress.IPv4Address | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    ssh: NodeSSHSpec | None = None

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not NODE_NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid hostname (letters, digits and '-', 1-63 characters, "
                "not starting or ending with '-')"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {key!r} is not valid (letters, digits, '.', '_', '/', '-')")
        return v


class TimingSpec(BaseModel):
    """Swarm timing. Defaults are fast for classrooms; a lab can ask for Docker's slower values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_ms: int = Field(100, ge=10, le=10_000)
    election_ticks: int = Field(10, ge=2, le=100)
    node_heartbeat_s: float = Field(1.0, gt=0, le=60)


class LabSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "swarm"
    provider: Literal["netns", "vagrant", "ssh"] = "netns"
    subnet: ipaddress.IPv4Network | None = None
    swarm: Literal["form", "bare"] = "form"
    managers: int | None = Field(None, ge=0, le=50)
    workers: int | None = Field(None, ge=0, le=200)
    nodes: list[NodeSpec] = Field(default_factory=list)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    vagrant: VagrantSpec | None = None
    # How the agent gets onto nodes: nsenter (netns only: started straight from the host's venv) or ssh
    # (pushed as a wheel over SSH; the only way for vagrant and ssh). None: the provider's natural way.
    via: Literal["nsenter", "ssh"] | None = None
    # What runs the tasks on each node: the agent's own process executor (every provider), or a real
    # Docker engine on the node (vagrant: provisioned; ssh: the machine's owner runs it), see
    # labctl/dockerengine.py and docs/architecture.md.
    executor: Literal["process", "docker"] = "process"

    @field_validator("name")
    @classmethod
    def _lab_name(cls, v: str) -> str:
        if not LAB_NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid lab name (lowercase letter first, then lowercase letters, "
                "digits or '-', at most 31 characters)"
            )
        return v

    @field_validator("subnet", mode="before")
    @classmethod
    def _subnet(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                net = ipaddress.IPv4Network(v, strict=True)
            except ValueError as e:
                raise ValueError(f"{v!r} is not an IPv4 network in CIDR form, e.g. 192.168.56.0/24 ({e})") from None
            if net.prefixlen > 28 or net.prefixlen < 16:
                raise ValueError(f"{v}: the prefix length must be between /16 and /28")
            if not net.is_private:
                raise ValueError(f"{v} is not a private range; lab traffic must stay on this machine")
            return net
        return v

    @model_validator(mode="after")
    def _expand_and_check(self) -> LabSpec:
        shorthand = self.managers is not None or self.workers is not None
        if shorthand and self.nodes:
            raise ValueError("give either 'nodes' or the 'managers'/'workers' shorthand, not both")
        nodes = list(self.nodes)
        if shorthand:
            nodes = [NodeSpec(name=f"manager{i}", role="manager") for i in range(1, (self.managers or 0) + 1)]
            nodes += [NodeSpec(name=f"worker{i}", role="worker") for i in range(1, (self.workers or 0) + 1)]
            object.__setattr__(self, "managers", None)
            object.__setattr__(self, "workers", None)
        if not nodes:
            raise ValueError("a lab needs at least one node")
        seen: set[str] = set()
        for node in nodes:
            if node.name.lower() in seen:
                raise ValueError(f"node name {node.name!r} is used twice")
            seen.add(node.name.lower())
            socket_path = f"{RUNTIME_ROOT}/{self.name}/{node.name}/docker.sock"
            if len(socket_path) > UNIX_SOCKET_MAX:
                raise ValueError(
                    f"node name {node.name!r} is too long for this lab name: its socket path "
                    f"would be {len(socket_path)} bytes (limit {UNIX_SOCKET_MAX})"
                )
        if self.swarm == "form" and not any(n.role == "manager" for n in nodes):
            raise ValueError("swarm: form needs at least one node with role: manager")
        nodes = _check_provider_fields(self, nodes)
        object.__setattr__(self, "nodes", nodes)
        if self.subnet is not None:
            object.__setattr__(self, "nodes", assign_addresses(nodes, self.subnet))
        return self

    @property
    def agent_via(self) -> Literal["nsenter", "ssh"]:
        """How the agent reaches this lab's nodes (see `via`)."""
        if self.via is not None:
            return self.via
        return "nsenter" if self.provider == "netns" else "ssh"

    @property
    def vagrant_settings(self) -> VagrantSpec:
        return self.vagrant or VagrantSpec()

    def with_subnet(self, subnet: ipaddress.IPv4Network) -> LabSpec:
        """The same spec on a concrete subnet (auto-chosen at `up`), addresses assigned."""
        data = self.model_dump(mode="json")
        data["subnet"] = str(subnet)
        return parse_spec(data)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpecError(f"lab {self.name!r} has no node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    @property
    def host_address(self) -> ipaddress.IPv4Address:
        """The host's address on the lab network (like a Vagrant host-only adapter: .1)."""
        assert self.subnet is not None
        return self.subnet.network_address + 1


def _check_provider_fields(spec: LabSpec, nodes: list[NodeSpec]) -> list[NodeSpec]:
    """Fields that only make sense for one provider, and the address rules of vagrant and ssh labs."""
    if spec.vagrant is not None and spec.provider != "vagrant":
        raise ValueError("vagrant: is only for provider: vagrant")
    if spec.via == "nsenter" and spec.provider != "netns":
        raise ValueError(f"via: nsenter needs provider: netns (provider {spec.provider} reaches nodes over ssh)")
    if spec.executor == "docker" and spec.provider == "netns":
        raise ValueError(
            "executor: docker needs provider vagrant or ssh: netns nodes share this host's filesystem and "
            "run no Docker engine of their own (their tasks run in the agent's process executor)"
        )
    out = []
    for i, node in enumerate(nodes):
        if spec.provider == "ssh":
            if node.ssh is None:
                raise ValueError(f"nodes[{i}].ssh: provider ssh needs the address (and user, key) of every machine")
            if node.ip is None:
                address = node.ssh.address
                try:
                    node = node.model_copy(update={"ip": ipaddress.IPv4Address(address)})
                except ValueError:
                    raise ValueError(
                        f"nodes[{i}].ip: {address!r} is a name; give the node's lab IP (its advertise address)"
                    ) from None
        elif node.ssh is not None:
            raise ValueError(f"nodes[{i}].ssh: only for provider: ssh")
        if spec.provider == "vagrant" and node.ip is not None and node.ip not in VAGRANT_RANGE:
            raise ValueError(
                f"nodes[{i}].ip: {node.ip} is outside {VAGRANT_RANGE}, the only host-only range VirtualBox "
                "accepts by default"
            )
        out.append(node)
    if spec.provider == "vagrant" and spec.subnet is not None and not spec.subnet.subnet_of(VAGRANT_RANGE):
        raise ValueError(
            f"subnet: {spec.subnet} is outside {VAGRANT_RANGE}, the only host-only range VirtualBox accepts by default"
        )
    return out


def assign_addresses(nodes: list[NodeSpec], subnet: ipaddress.IPv4Network) -> list[NodeSpec]:
    """Give every node without an IP the next free address from .11 upward; check the given ones."""
    host = subnet.network_address + 1
    taken: dict[ipaddress.IPv4Address, str] = {}
    for i, node in enumerate(nodes):
        if node.ip is None:
            continue
        if node.ip not in subnet:
            raise ValueError(f"nodes[{i}].ip: {node.ip} is not in subnet {subnet}")
        if node.ip in (subnet.network_address, subnet.broadcast_address, host):
            raise ValueError(f"nodes[{i}].ip: {node.ip} is reserved (network, broadcast or the host's {host})")
        if node.ip in taken:
            raise ValueError(f"nodes[{i}].ip: {node.ip} is already used by {taken[node.ip]}")
        taken[node.ip] = node.name
    candidate = subnet.network_address + FIRST_NODE_HOST
    out: list[NodeSpec] = []
    for node in nodes:
        if node.ip is None:
            while candidate in taken:
                candidate += 1
            if candidate >= subnet.broadcast_address:
                raise ValueError(f"subnet {subnet} has no free address left for node {node.name!r}")
            node = node.model_copy(update={"ip": candidate})
            taken[candidate] = node.name
        out.append(node)
    return out


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_spec(data: Any, source: str = "lab spec") -> LabSpec:
    """Validate raw (YAML-loaded) data; raise SpecError with one clear line on failure."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping (name:, nodes:, …)")
    try:
        return LabSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{source}: {_format_errors(e)}") from None


def load_spec(path: Path | None) -> LabSpec:
    """Read `lab.yaml`; with no file, the default classroom lab (3 managers, 2 workers)."""
    if path is None:
        return default_spec()
    return parse_spec(read_yaml(path, SpecError), str(path))


def default_spec() -> LabSpec:
    """The "3 managers and 2 workers" classroom template."""
    return parse_spec({"name": "swarm", "managers": 3, "workers": 2}, "default lab")


def subnet_candidates() -> list[ipaddress.IPv4Network]:
    """Subnets tried in order for a lab without one: 192.168.56.0/24, 192.168.57.0/24, … 192.168.255.0/24."""
    base = int(DEFAULT_SUBNET_BASE.network_address)
    return [ipaddress.IPv4Network((base + (i << 8), 24)) for i in range(0, 256 - 56)]
