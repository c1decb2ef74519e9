"""The JSON report: one document per lab (or a list for a class), stable keys for other tools."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from labctl.exercises.results import LabResult

FORMAT_VERSION = 1


def document(results: Sequence[LabResult]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "passed": all(r.passed for r in results),
        "labs": [r.to_json() for r in results],
    }


def render(results: Sequence[LabResult]) -> str:
    return json.dumps(document(results), indent=2, default=str) + "\n"
