"""Skipped CA loading: contexts built during the import get no system CAs, and no others are touched."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from agents.fastimport import import_without_system_cas


def test_contexts_created_during_import_get_no_system_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "la_fake_client.py").write_text(
        "import ssl\nVERIFIED = ssl.create_default_context()\nPLAIN = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "PLAIN.set_default_verify_paths()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mod, skipped = import_without_system_cas("la_fake_client")
        assert {id(c) for c in skipped} == {id(mod.VERIFIED), id(mod.PLAIN)}
        # Still verifying, with nothing to trust: a connection through them fails closed.
        assert mod.VERIFIED.verify_mode == ssl.CERT_REQUIRED
        assert mod.VERIFIED.cert_store_stats()["x509_ca"] == 0
        # The patch is gone: a context made now loads its CAs at once, as usual.
        assert "record" not in repr(ssl.SSLContext.set_default_verify_paths)
        fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        fresh.set_default_verify_paths()
        if Path(ssl.get_default_verify_paths().cafile or "/nonexistent").exists():
            assert fresh.cert_store_stats()["x509_ca"] > 0
    finally:
        sys.modules.pop("la_fake_client", None)
