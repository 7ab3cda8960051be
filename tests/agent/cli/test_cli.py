"""The ``cellar`` CLI against a real cellard: health, version, output formats, errors, pki, completion."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from agent.version import VERSION
from tests.support import REPO


def cellar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CELLAR_")}
    full_env["CELLAR_CONFIG"] = "/nonexistent/cellar-config.toml"
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60, env=full_env,
        stdin=subprocess.DEVNULL,
    )


def test_health_table(cellard):
    result = cellar("--addr", cellard.socket, "health")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "STATUS"]
    rows = {tuple(line.split()) for line in lines[1:]}
    assert all(status == "SERVING" for _name, status in rows), rows
    assert {
        ("(server)", "SERVING"), ("grpc.health.v1.Health", "SERVING"), ("grpc.reflection.v1alpha.ServerReflection", "SERVING"),
        ("runtime.CellService", "SERVING"), ("cellar.v1.Cells", "SERVING"), ("observe.Observe", "SERVING"),
        ("cellar.v1.Logs", "SERVING"),
    } <= rows


def test_health_json_and_single_service(cellard):
    result = cellar("--addr", cellard.socket, "-o", "json", "health", "grpc.health.v1.Health")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"service": "grpc.health.v1.Health", "status": "SERVING"}]


def test_addr_from_environment(cellard):
    result = cellar("health", env={"CELLAR_ADDR": cellard.socket, "CELLAR_OUTPUT": "json"})
    assert result.returncode == 0, result.stderr
    assert {"service": "", "status": "SERVING"} in json.loads(result.stdout)


def test_addr_from_config_file(cellard, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'addr = "{cellard.socket}"\noutput = "json"\n')
    result = cellar("version", env={"CELLAR_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"client": VERSION, "server": VERSION}


def test_bad_client_config_is_one_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('adress = "/x"\n')
    result = cellar("version", env={"CELLAR_CONFIG": str(config)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "adress: unknown key" in result.stderr


def test_version_table(cellard):
    result = cellar("--addr", cellard.socket, "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CLIENT:", VERSION, "SERVER:", VERSION]


def test_version_without_server(tmp_path):
    result = cellar("--addr", str(tmp_path / "none.sock"), "-o", "json", "version")
    assert result.returncode == 0
    out = json.loads(result.stdout)
    assert out["client"] == VERSION and out["server"] is None and out["server_error"].startswith("UNAVAILABLE")


def test_rpc_error_against_a_stopped_daemon_is_one_line(cellard):
    cellard.stop()
    result = cellar("--addr", cellard.socket, "health")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cellar: UNAVAILABLE: ")


def test_usage_error_is_one_line_exit_2():
    result = cellar("-o", "xml", "health")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cellar: usage: ")


def test_tcp_needs_client_certificates():
    result = cellar("--addr", "127.0.0.1:1", "health")
    assert result.returncode == 2 and result.stderr.startswith("cellar: usage: --ca: TCP address")


def test_health_over_mtls(cellard_factory):
    daemon = cellard_factory(tcp=True)
    cert, key = daemon.pki.cert("obs-user")
    result = cellar("--addr", daemon.tcp, "--ca", str(daemon.pki.ca), "--cert", str(cert), "--key", str(key), "health", "")
    assert result.returncode == 0, result.stderr
    cert, key = daemon.pki.cert("stranger")
    result = cellar("--addr", daemon.tcp, "--ca", str(daemon.pki.ca), "--cert", str(cert), "--key", str(key), "health")
    assert result.returncode == 1 and result.stderr.startswith("cellar: PERMISSION_DENIED: stranger")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell):
    result = cellar("completion", shell)
    assert result.returncode == 0 and "_CELLAR_COMPLETE" in result.stdout


def test_pki_init_and_issue(tmp_path):
    d = str(tmp_path / "pki")
    assert cellar("pki", "init", "--dir", d).returncode == 0
    server = cellar("pki", "issue", "server", "node1", "--san", "10.0.0.7", "--san", "node1.example", "--dir", d)
    assert server.returncode == 0, server.stderr
    client = cellar("pki", "issue", "client", "alice", "--role", "operator", "--dir", d)
    assert client.returncode == 0, client.stderr
    assert '"alice" = "operator"' in client.stdout

    for name in ("ca", "node1", "alice"):
        assert stat.S_IMODE(os.stat(f"{d}/{name}-key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700

    ca = x509.load_pem_x509_certificate(Path(d, "ca.pem").read_bytes())
    node = x509.load_pem_x509_certificate(Path(d, "node1.pem").read_bytes())
    alice = x509.load_pem_x509_certificate(Path(d, "alice.pem").read_bytes())
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"node1", "node1.example"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    alice_san = alice.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alice_san.get_values_for_type(x509.UniformResourceIdentifier) == ["cellar://role/operator/alice"]
    for leaf in (node, alice):
        leaf.verify_directly_issued_by(ca)
    days = (node.not_valid_after_utc - node.not_valid_before_utc).days
    assert 365 <= days <= 366
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650

    again = cellar("pki", "issue", "client", "alice", "--role", "operator", "--dir", d)
    assert again.returncode == 1 and "exists; use --force" in again.stderr
    assert cellar("pki", "init", "--dir", d).returncode == 1
    assert cellar("pki", "issue", "client", "alice", "--role", "admin", "--dir", d, "--force").returncode == 0


def test_pki_issue_without_ca(tmp_path):
    result = cellar("pki", "issue", "client", "bob", "--dir", str(tmp_path))
    assert result.returncode == 1 and "cellar pki init" in result.stderr


def test_every_command_resolves_and_help_lists_it():
    """The lazily loaded commands: each name in COMMANDS imports to a command of that name."""
    from agent.cli import COMMANDS, cli

    ctx = cli.make_context("cellar", ["--help"], resilient_parsing=True)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    listed = cellar("--help").stdout
    assert all(f"  {name} " in listed for name in COMMANDS), listed


def test_a_command_loads_only_its_own_modules():
    """`cellar ps` must not pay for the server's modules, TLS or other commands' protobufs (start-up time)."""
    probe = ("import sys; from agent.cli import main\n"
             "try:\n    main(['--addr', '/nonexistent/cellar.sock', '--timeout', '0.1', 'ps'])\n"
             "except SystemExit:\n    pass\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('agent', 'cryptography', 'proto')))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=REPO, stdin=subprocess.DEVNULL)
    loaded = set(result.stdout.split())
    assert "agent.cli.cells" in loaded, result
    assert not {m for m in loaded if m.startswith(("agent.core", "agent.auth", "agent.runtime", "agent.pb", "agent.local",
                                                    "agent.cli.logs", "agent.cli.fl", "cryptography",
                                                    "proto.scaleout", "proto.parigot"))}, loaded
