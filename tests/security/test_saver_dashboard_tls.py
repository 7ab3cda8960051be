"""The saver dashboard over HTTPS: a client certificate of the fleet's CA gets in, nothing else does.

A real cellar-saver with mutual TLS (no token configured, so a certificate is the only way in).
"""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest

from tests.agent.pb.conftest import Saver, free_port
from tests.support.cellard import PKI


def _get(port: int, ca: Path, client: tuple[Path, Path] | None) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_dashboard_lets_in_client_certificates_of_the_fleet_ca_only(pki: PKI, tmp_path: Path) -> None:
    cert, key = pki.cert("cellard-test")
    port = free_port()
    saver = Saver(str(tmp_path / "saver.sqlite"), free_port(), tmp_path / "saver.log", insecure=False, extra=(
        "--tls-ca", str(pki.ca), "--tls-cert", str(cert), "--tls-key", str(key),
        "--dashboard-listen", f"127.0.0.1:{port}"))
    saver.start()
    try:
        assert _get(port, pki.ca, pki.cert("stranger")) == 200  # any certificate the fleet's CA signed
        assert _get(port, pki.ca, None) == 401  # HTTPS without a certificate, and no token configured
        intruder = (pki.other_dir / "intruder.pem", pki.other_dir / "intruder-key.pem")
        try:
            status = _get(port, pki.ca, intruder)
        except (ssl.SSLError, ConnectionError):
            status = 0  # the handshake refused the other CA's certificate
        assert status in (0, 401)
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/")
            plain.getresponse()
        plain.close()
        assert _get(port, pki.ca, pki.cert("stranger")) == 200  # still serving after the refusals
    finally:
        saver.stop()
