from __future__ import annotations

import pytest

from labctl.exercises.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), (15, 15), (2.5, 2.5), ("10", 10),
    (" 45s ", 45),
])
def test_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "30 sec", "-1", -1, True, None, "1x"])
def test_bad(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_round_trips() -> None:
    for s in (0.5, 30, 90, 120):
        assert parse_duration(format_duration(s)) == s
