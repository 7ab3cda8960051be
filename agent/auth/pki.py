"""A small private PKI for cellar's mutual TLS, with ``cryptography``.

Layout of a PKI directory: ``ca.pem`` + ``ca-key.pem``, and per issued name ``NAME.pem`` +
``NAME-key.pem``. Keys are EC P-256 and written 0600; certificates 0644. Lifetimes: CA 10 years,
leaves 1 year.

Identity and role: a client certificate has CN=NAME and, when issued with a role, the URI SAN
``cellar://role/<role>/<NAME>``. cellard maps the identity (the CN) to a role through
``[auth.identities]`` -- the authoritative, revocable table; the role SAN records the intent and is
honoured on its own only when cellard sets ``auth.trust_cert_role = true``. The identity is always the
CN; a role SAN naming anyone else makes cellard refuse the certificate (agent.auth.authz.cert_identity).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.config import ROLES

CA_DAYS = 3650
LEAF_DAYS = 365
ROLE_URI = "cellar://role/{role}/{name}"


class PKIError(Exception):
    """A refused PKI operation (existing files, missing CA, bad name); one line for the user."""


def default_dir() -> str:
    if os.geteuid() == 0:
        return "/etc/cellar/pki"
    return os.path.join(os.path.expanduser("~"), ".config", "cellar", "pki")


@dataclass(frozen=True)
class Issued:
    cert_path: str
    key_path: str


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is filtered by umask and ignored for an existing file


def _check_free(paths: list[str], force: bool) -> None:
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise PKIError(f"{existing[0]} exists; use --force to overwrite")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _validate_name(name: str) -> None:
    if not name or len(name) > 64 or "/" in name or name.startswith(".") or not name.isprintable():
        raise PKIError(f"invalid name {name!r}: 1-64 printable characters, no '/', not starting with '.'")


def init_ca(directory: str, common_name: str = "cellar CA", force: bool = False, days: int = CA_DAYS) -> Issued:
    """Create a self-signed CA (can sign leaves only: path length 0)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    out = Issued(os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem"))
    _check_free([out.cert_path, out.key_path], force)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(out.key_path, _key_pem(key), 0o600)
    _write(out.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def issue(
    directory: str,
    kind: str,
    name: str,
    role: str | None = None,
    sans: tuple[str, ...] = (),
    force: bool = False,
    days: int = LEAF_DAYS,
) -> Issued:
    """Issue a ``server`` or ``client`` certificate signed by the CA in ``directory``.

    server: SANs are NAME plus ``sans`` (hostnames or IPs). client: CN=NAME, plus the role URI SAN.
    """
    if kind not in ("server", "client"):
        raise PKIError(f"kind must be server or client, got {kind!r}")
    _validate_name(name)
    if role is not None and role not in ROLES:
        raise PKIError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    ca_cert_path, ca_key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem")
    try:
        with open(ca_cert_path, "rb") as fh:
            ca_cert = x509.load_pem_x509_certificate(fh.read())
        with open(ca_key_path, "rb") as fh:
            ca_key = serialization.load_pem_private_key(fh.read(), password=None)
    except FileNotFoundError as exc:
        raise PKIError(f"no CA in {directory} ({exc.filename} missing): run `cellar pki init` first") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{ca_key_path}: expected an EC private key")
    out = Issued(os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}-key.pem"))
    _check_free([out.cert_path, out.key_path], force)

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    if kind == "server":
        for value in (name, *sans):
            general = _general_name(value)
            if general not in alt:
                alt.append(general)
        eku = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        alt.extend(_general_name(v) for v in sans)
        if role is not None:
            alt.append(x509.UniformResourceIdentifier(ROLE_URI.format(role=role, name=name)))
        eku = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(out.key_path, _key_pem(key), 0o600)
    _write(out.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out
