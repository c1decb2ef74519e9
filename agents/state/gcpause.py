"""Pausing the cyclic garbage collector around bulk object construction.

Decoding a 10,000-task changeset builds ~100k small container objects; with the collector on, each
threshold crossing walks the young generation (and periodically the whole store), several times the
cost of the work itself. None of our objects form cycles, so nothing is lost by deferring collection.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused(enabled: bool = True) -> Iterator[None]:
    """Disable the cyclic GC for the block (if ``enabled`` and it is on); restores it afterwards."""
    if not (enabled and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
