"""Deferred CA loading: contexts built during the import get their CAs later, and no others are touched."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from agents.fastimport import import_deferring_ca_loading, load_deferred_cas


def test_contexts_created_during_import_are_completed_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "la_fake_client.py").write_text(
        "import ssl\nVERIFIED = ssl.create_default_context()\nPLAIN = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "PLAIN.set_default_verify_paths()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mod, deferred = import_deferring_ca_loading("la_fake_client")
        assert {id(c) for c in deferred} == {id(mod.VERIFIED), id(mod.PLAIN)}
        assert mod.VERIFIED.verify_mode == ssl.CERT_REQUIRED
        # The patch is gone: a context made now loads its CAs at once, as usual.
        assert "record" not in repr(ssl.SSLContext.set_default_verify_paths)
        load_deferred_cas(deferred)
        assert deferred == []
        fresh = ssl.create_default_context()
        assert mod.VERIFIED.cert_store_stats() == fresh.cert_store_stats()
    finally:
        sys.modules.pop("la_fake_client", None)
