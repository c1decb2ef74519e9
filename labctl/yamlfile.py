"""Reading a YAML file a teacher wrote, with one clear error line (naming the file and position)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """The parsed document; unreadable files and YAML syntax errors raise `error` with one line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise error(f"{path}: not valid YAML{at}") from None
