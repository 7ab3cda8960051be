"""Attacks on the mTLS identity rule (issue 13), with certificates signed by the test CA.

Before: a certificate's URI SANs were looked up before its CN, so CN ``observer-u`` with URI SAN
``admin-u`` was admin. The rule now (agent/auth/authz.py): the identity is the subject CN, and nothing
else; a cellar role SAN ``cellar://role/<role>/<name>`` must name that CN, and other URI SANs are
never an identity. A certificate without exactly one CN, or whose cellar SAN names someone else, is
UNAUTHENTICATED: it does not say who the caller is (PERMISSION_DENIED is for a known identity
without the role).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc
from tests.support.cellard import TLS_IDENTITIES

pytestmark = pytest.mark.root

IDENTITIES = {**TLS_IDENTITIES, "observer-u": "observer", "admin-u": "admin"}


def forge(pki_dir: Path, file: str, cns: tuple[str, ...], uris: tuple[str, ...]) -> None:
    """A client certificate signed by the test CA with these CNs and URI SANs."""
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    (pki_dir / f"{file}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki_dir / f"{file}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def calls(daemon: Any, file: str) -> tuple[str, str]:
    """(status of an observer call, status of an operator call) for the certificate ``file``."""
    out = []
    with daemon.tls_channel(file) as ch:
        for call in (lambda: cells_pb2_grpc.CellsStub(ch).List(cells_pb2.ListCellsRequest(), timeout=10),
                     lambda: runtime_pb2_grpc.CellServiceStub(ch).Allocate(
                         runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="../bad")), timeout=10)):
            try:
                call()
                out.append("OK")
            except grpc.RpcError as exc:
                out.append(exc.code().name)
    return out[0], out[1]


@pytest.fixture
def daemon(cellard_factory: Any) -> Any:
    return cellard_factory({"auth": {"identities": IDENTITIES}}, tcp=True)


def test_a_plain_uri_san_is_not_an_identity(daemon: Any) -> None:
    forge(daemon.pki.dir, "obs-with-admin-uri", ("observer-u",), ("admin-u",))
    assert calls(daemon, "obs-with-admin-uri") == ("OK", "PERMISSION_DENIED")  # observer-u, not admin-u


@pytest.mark.parametrize("cns, uris", [
    (("observer-u",), ("cellar://role/admin/admin-u",)),  # the cellar SAN names another identity
    (("observer-u",), ("cellar://role/observer/observer-u", "cellar://role/admin/observer-u")),  # two roles
    ((), ("cellar://role/admin/admin-u",)),  # no CN
    (("observer-u", "admin-u"), ()),  # two CNs
])
def test_a_certificate_that_does_not_name_one_identity_is_unauthenticated(
        daemon: Any, cns: tuple[str, ...], uris: tuple[str, ...]) -> None:
    forge(daemon.pki.dir, "ambiguous", cns, uris)
    assert calls(daemon, "ambiguous") == ("UNAUTHENTICATED", "UNAUTHENTICATED")
    assert daemon.events("auth.unauthenticated"), daemon.log_text()[-2000:]


def test_a_role_san_that_names_the_cn_is_fine(daemon: Any) -> None:
    forge(daemon.pki.dir, "consistent", ("observer-u",), ("cellar://role/observer/observer-u", "spiffe://x/y"))
    assert calls(daemon, "consistent") == ("OK", "PERMISSION_DENIED")
    forge(daemon.pki.dir, "admin-cert", ("admin-u",), ("cellar://role/admin/admin-u",))
    assert calls(daemon, "admin-cert") == ("OK", "INVALID_ARGUMENT")  # allowed; the name is then refused
