"""Check API response bodies against the Docker Engine API v1.45 reference (an OpenAPI 2 document).

``validate(body, "Node")`` resolves ``#/definitions/...`` references inside the document and validates
with JSON Schema draft 4 (what Swagger 2.0 schemas are). Two adjustments make the reference say what
dockerd actually sends: ``x-nullable: true`` allows null, and so does every map (``additionalProperties``)
and array, because Go encodes a nil map or slice as ``null`` (e.g. ``IPAM.Options``).
Tests call :func:`skip_unless_available` (or use :func:`validate`, which skips by itself) so the suite
still runs where the reference or jsonschema is missing.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

REFERENCE = Path(os.environ.get("DOCKER_API_REFERENCE", "/work/shared/reference/docker-engine-api-v1.45.yaml"))


def available() -> bool:
    try:
        import jsonschema  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        return False
    return REFERENCE.exists()


def skip_unless_available() -> None:
    import pytest

    if not available():
        pytest.skip("jsonschema or the v1.45 reference spec is not available")


def _nullable(schema: Any) -> Any:
    """A copy of ``schema`` where x-nullable schemas, maps and arrays also accept null."""
    if isinstance(schema, list):
        return [_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _nullable(v) for k, v in schema.items()}
    kind = out.get("type")
    if isinstance(kind, str) and (
        out.get("x-nullable") is True or kind == "array" or (kind == "object" and "additionalProperties" in out)
    ):
        out["type"] = [kind, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "$ref" in out and out.get("x-nullable") is True:
        ref = out.pop("$ref")
        out = {"anyOf": [{"$ref": ref}, {"type": "null"}]}
    return out


@functools.lru_cache(maxsize=1)
def definitions() -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load(REFERENCE.read_text())
    defs: dict[str, Any] = _nullable(copy.deepcopy(spec["definitions"]))
    return defs


def schema_for(definition: str, *, array: bool = False) -> dict[str, Any]:
    defs = definitions()
    if definition not in defs:
        raise KeyError(f"no definition {definition!r} in {REFERENCE.name}")
    ref = {"$ref": f"#/definitions/{definition}"}
    return {"definitions": defs, **({"type": "array", "items": ref} if array else ref)}


def validate(body: Any, definition: str, *, array: bool = False) -> None:
    """Raise ``jsonschema.ValidationError`` if ``body`` is not a ``definition`` (a list of them if
    ``array``); skip the calling test when the reference or jsonschema is unavailable."""
    skip_unless_available()
    import jsonschema

    jsonschema.Draft4Validator(schema_for(definition, array=array)).validate(body)


def validate_inline(body: Any, schema: dict[str, Any]) -> None:
    """Validate against an ad-hoc schema that may ``$ref`` the reference's definitions."""
    skip_unless_available()
    import jsonschema

    jsonschema.Draft4Validator({"definitions": definitions(), **schema}).validate(body)
