"""Suite-wide options and markers.

`--soak` turns the Raft simulation from the CI budget (>= 500 seeds) into the soak budget (10,000+).
Tests marked `netns` need root, iproute2 and nftables; they are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False, help="run the long Raft soak (10,000+ seeds)")
    parser.addoption("--seed", action="store", default=None, help="replay one simulation seed")


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"needs the '{tool}' binary"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
