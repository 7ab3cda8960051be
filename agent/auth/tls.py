"""gRPC TLS credentials from PEM files, for cellard (mutual TLS) and the CLI.

Files are parsed with ``cryptography`` first so a wrong path or a swapped cert/key is reported as
one line naming the setting, not as an opaque handshake failure later.
"""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.config import ConfigError, TLSConfig


def read_pem(path: str, key: str, kind: str) -> bytes:
    """Read and check a PEM file; ``kind`` is ``cert`` or ``key``; errors name ``key``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path!r}: {exc.strerror}") from None
    try:
        if kind == "key":
            serialization.load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {path!r} is not a PEM {'private key' if kind == 'key' else 'certificate'}: {exc}") from None
    return data


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """Mutual TLS: clients must present a certificate signed by ``tls.ca`` (handshake fails otherwise)."""
    ca = read_pem(tls.ca, "tls.ca", "cert")
    cert = read_pem(tls.cert, "tls.cert", "cert")
    key = read_pem(tls.key, "tls.key", "key")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def client_credentials(ca: str, cert: str, key: str, prefix: str = "") -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, f"{prefix}ca", "cert"),
        private_key=read_pem(key, f"{prefix}key", "key"),
        certificate_chain=read_pem(cert, f"{prefix}cert", "cert"),
    )
