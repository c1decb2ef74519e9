"""Rendering the lab's Vagrantfile from `Vagrantfile.j2`.

The Vagrantfile is Ruby: a value that reached it unchecked could run code on the teacher's machine at the
next `vagrant` command. So the spec is validated first (labctl/spec.py), then every value is checked again
here against a narrow pattern and emitted as a single-quoted Ruby literal (no interpolation, no escapes),
with StrictUndefined so a template typo fails instead of rendering an empty string.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import jinja2

from labctl import dockerengine
from labctl.errors import LabError
from labctl.spec import BOX_RE, NODE_NAME_RE, VAGRANT_RANGE, LabSpec, SpecError

TEMPLATE = Path(__file__).resolve().parent.parent / "Vagrantfile.j2"
SAFE_LITERAL_RE = re.compile(r"^[A-Za-z0-9._/:-]{1,128}$")


def ruby_literal(value: object) -> str:
    """A single-quoted Ruby string for a value made only of characters that mean nothing to Ruby."""
    text = str(value)
    if not SAFE_LITERAL_RE.match(text):
        raise SpecError(f"refusing to render {text!r} into the Vagrantfile (only letters, digits and . _ / : -)")
    return f"'{text}'"


def vm_name(lab: str, node: str) -> str:
    """The VirtualBox VM name: lab-qualified, so two labs with a `manager1` never clash."""
    return f"labctl-{lab}-{node}"


def check_renderable(spec: LabSpec) -> None:
    """Every rule the Vagrantfile relies on, checked before anything is rendered; raises SpecError."""
    if spec.provider != "vagrant":
        raise SpecError(f"lab {spec.name!r} uses provider {spec.provider}; only provider: vagrant has a Vagrantfile")
    box = spec.vagrant_settings.box
    if not BOX_RE.match(box):
        raise SpecError(f"vagrant.box: {box!r} is not a valid box name")
    for i, node in enumerate(spec.nodes):
        if not NODE_NAME_RE.match(node.name):
            raise SpecError(f"nodes[{i}].name: {node.name!r} is not a valid hostname")
        if node.ip is None:
            raise SpecError(f"nodes[{i}].ip: no address assigned (the lab needs a subnet)")
        if ipaddress.IPv4Address(node.ip) not in VAGRANT_RANGE:
            raise SpecError(f"nodes[{i}].ip: {node.ip} is outside {VAGRANT_RANGE}")


def render(spec: LabSpec) -> str:
    """The Vagrantfile text for a spec whose addresses are assigned (see LabSpec.with_subnet)."""
    check_renderable(spec)
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
    )
    env.filters["rb"] = ruby_literal
    try:
        template = env.get_template(TEMPLATE.name)
    except jinja2.TemplateNotFound:
        raise LabError(f"the Vagrantfile template is missing ({TEMPLATE})") from None
    settings = spec.vagrant_settings
    first_manager = next((n.name for n in spec.nodes if n.role == "manager"), spec.nodes[0].name)
    context: dict[str, Any] = {
        "lab": spec.name,
        "box": settings.box,
        "cpus": settings.cpus,
        "memory": settings.memory,
        "nodes": [
            {"name": n.name, "ip": str(n.ip), "role": n.role, "primary": n.name == first_manager,
             "vm_name": vm_name(spec.name, n.name)}
            for n in spec.nodes
        ],
        "docker_engine": spec.executor == "docker",
        **engine_context(),
    }
    return template.render(**context)


def engine_context() -> dict[str, str]:
    """The Docker engine's files and names for the provisioning script: constants of this package, not spec
    values, inside a single-quoted (never interpolated) Ruby heredoc; only a line that would end one of the
    heredocs early is refused."""
    context = {
        "stock_units": " ".join(dockerengine.STOCK_UNITS),
        "config_dir": str(Path(dockerengine.CONFIG_PATH).parent),
        "config_path": dockerengine.CONFIG_PATH,
        "engine_config": dockerengine.daemon_json().rstrip("\n"),
        "engine_unit_name": dockerengine.UNIT_NAME,
        "engine_unit": dockerengine.UNIT.rstrip("\n"),
        "engine_host": dockerengine.ENGINE_HOST,
    }
    for key, text in context.items():
        if any(line.strip() in ("SHELL", "LABCTL_EOF") for line in text.splitlines()):
            raise LabError(f"the Docker engine's {key} cannot be put into the Vagrantfile")
    return context
