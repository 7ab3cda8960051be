"""Who may read the dashboard: a client certificate signed by the saver's CA (HTTPS), or a bearer
token whose SHA-256 is configured (``--dashboard-token-sha256``; the token itself is never stored).

The token is a random secret (``openssl rand -hex 32``), so one SHA-256 is a sufficient hash: no
dictionary to slow down. It is compared in constant time (``hmac.compare_digest``) on the hashes.
A browser sends it once to ``POST /login`` and then carries it in an HttpOnly, SameSite=Strict
cookie; scripts and curl send ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from http.cookies import CookieError, SimpleCookie

COOKIE = "cellar_dashboard"
MAX_TOKEN = 512
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadTokenHash(ValueError):
    pass


def parse_token_hash(value: str) -> bytes:
    """``--dashboard-token-sha256``: 64 hex digits (``printf %s "$TOKEN" | sha256sum``)."""
    value = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(value):
        raise BadTokenHash("--dashboard-token-sha256: expected 64 hex digits (the SHA-256 of the token)")
    return bytes.fromhex(value)


def token_matches(token: str, expected: bytes | None) -> bool:
    if expected is None or not token or len(token) > MAX_TOKEN:
        return False
    return hmac.compare_digest(hashlib.sha256(token.encode("utf-8", "replace")).digest(), expected)


def request_token(authorization: str | None, cookie: str | None) -> str:
    """The token a request carries: ``Authorization: Bearer`` first, else the login cookie."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookie and len(cookie) <= 8192:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except CookieError:
            return ""
        if COOKIE in jar:
            return jar[COOKIE].value
    return ""


def cookie_safe(token: str) -> bool:
    """Printable ASCII without the characters that end or quote a cookie value (RFC 6265 cookie-octet)."""
    return bool(token) and all("!" <= c <= "~" and c not in ';,"\\' for c in token)
