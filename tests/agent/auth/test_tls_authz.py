"""Remote access: TCP is mutual TLS only, and the certificate's identity decides the role."""

from __future__ import annotations

import grpc
import pytest


@pytest.fixture
def remote(cellard_factory):
    return cellard_factory(tcp=True)


def call_allocate(channel: grpc.Channel) -> grpc.RpcError:
    # No servicer yet: the interceptor decides before any handler exists; raw bytes need no proto.
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/runtime.CellService/Allocate")(b"", timeout=5)
    return err.value


def test_no_client_certificate_fails_the_handshake(remote):
    with remote.tls_channel(None) as ch, pytest.raises(grpc.RpcError) as err:
        remote.health(channel=ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_fails_the_handshake(remote):
    with remote.tls_channel("intruder", ca_dir=remote.pki.other_dir) as ch, pytest.raises(grpc.RpcError) as err:
        remote.health(channel=ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_observer_reads_but_may_not_mutate(remote):
    with remote.tls_channel("obs-user") as ch:
        assert remote.health(channel=ch) == "SERVING"
        err = call_allocate(ch)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "obs-user" in err.details() and "observer" in err.details()
    assert "/runtime.CellService/Allocate" in err.details()
    denied = remote.events("auth.denied")
    assert denied and denied[-1]["identity"] == "obs-user" and denied[-1]["role"] == "observer"
    assert denied[-1]["method"] == "/runtime.CellService/Allocate" and denied[-1]["peer"].startswith("ipv4:")


def test_operator_passes_authorization_on_a_mutating_rpc(remote):
    with remote.tls_channel("op-user") as ch:
        # Allowed through: the servicer itself answers (an empty cell name is invalid).
        err = call_allocate(ch)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "cell.name" in err.details()


def test_admin_only_for_unlisted_methods(remote):
    with remote.tls_channel("op-user") as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/cellar.v1.Admin/Anything")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with remote.tls_channel("admin-user") as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/cellar.v1.Admin/Anything")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unknown_identity_is_denied_even_health(remote):
    with remote.tls_channel("stranger") as ch, pytest.raises(grpc.RpcError) as err:
        remote.health(channel=ch)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "stranger" in err.value.details()
    assert remote.events("auth.denied")[-1]["role"] is None


def test_trust_cert_role_accepts_the_role_san(cellard_factory):
    daemon = cellard_factory({"auth": {"trust_cert_role": True}}, tcp=True)
    with daemon.tls_channel("stranger") as ch:  # carries cellar://role/admin/stranger
        assert daemon.health(channel=ch) == "SERVING"


def test_plain_tcp_refused_without_the_dev_flag(run_cellard, tmp_path):
    result = run_cellard("--socket", str(tmp_path / "s.sock"), "--run-dir", str(tmp_path / "run"), "--tcp", "127.0.0.1:0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellard: config error: server.tcp_listen:")
    assert "--insecure-tcp-dev" in lines[0]


def test_plain_tcp_with_the_dev_flag_works_and_is_logged_loudly(cellard_factory):
    daemon = cellard_factory(tcp=True, tls=False, args=("--insecure-tcp-dev",))
    warning = daemon.events("server.insecure_tcp")
    assert warning and warning[0]["level"] == "warning" and "NEVER" in warning[0]["message"].upper()
    with grpc.insecure_channel(daemon.tcp) as ch:
        assert daemon.health(channel=ch) == "SERVING"
