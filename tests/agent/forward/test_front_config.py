"""``[front."<service>"]`` tables: accepted forms and the one-line errors for bad ones."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, FrontConfig, parse


def front(**table: object) -> dict[str, object]:
    return {"front": {"file.v1.File": table}}


@pytest.mark.parametrize("table", [
    {"upstream": "unix:/run/up.sock"},
    {"upstream": "unix:///run/up.sock"},
    {"upstream": "10.0.0.1:7443", "ca": "/etc/ca.pem"},
    {"upstream": "node2.example.com:7443", "ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem", "server_name": "n2"},
    {"upstream": "127.0.0.1:7000", "plaintext": True},
    {"upstream": "[::1]:7000", "plaintext": True},
])
def test_accepted(table: dict[str, object]) -> None:
    cfg = parse(front(**table))
    assert cfg.front["file.v1.File"] == FrontConfig(**table)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "message"), [
    ({}, 'front."file.v1.File".upstream: must be set'),
    ({"upstream": "unix:relative.sock"}, "expected unix:/absolute/path"),
    ({"upstream": "nohost"}, "expected host:port"),
    ({"upstream": "h:99999", "plaintext": True}, "expected host:port"),
    ({"upstream": "h:1"}, "needs TLS"),
    ({"upstream": "h:1", "ca": "/ca", "cert": "/c"}, "cert and key together"),
    ({"upstream": "h:1", "plaintext": True, "ca": "/ca"}, "contradicts"),
    ({"upstream": "unix:/x", "bogus": 1}, "front.file.v1.File.bogus: unknown key"),
    ({"upstream": 5}, "expected a string"),
])
def test_rejected(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse(front(**table))


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        parse({"front": {"file.v1.File": "unix:/x"}})
