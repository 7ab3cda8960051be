"""The role table: read-only RPCs for observers, mutations for operators, the rest admin-only."""

from __future__ import annotations

import pytest

from agent.auth.authz import CertificateRefused, allows, cert_role, required_role
from agent.config import AuthConfig


@pytest.mark.parametrize(
    ("method", "role"),
    [
        ("/runtime.CellService/Allocate", "operator"),
        ("/runtime.CellService/Stop", "operator"),
        ("/observe.Observe/GetSubProcessStream", "observer"),
        ("/cellar.v1.Cells/List", "observer"),
        ("/cellar.v1.Cells/Freeze", "operator"),
        ("/cellar.v1.Logs/Read", "observer"),
        ("/grpc.health.v1.Health/Watch", "observer"),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "observer"),
        ("/pb.WorkerSaver/Check", "observer"),
        ("/pb.WorkerSaver/SaveMachine", "operator"),
        ("/pb.ServerDispatcher/Register", "operator"),
        ("/pb.FunctionDispatcher/GetTarget", "observer"),
        ("/Agent/RunJob", "operator"),
        ("/file.v1.File/Write", "operator"),
        ("/queue.v1.Queue/Send", "operator"),
        ("/scaleout.ModelService/Upload", "operator"),
        ("/runtime.CellService/NewThing", "admin"),
        ("/cellar.v1.Cells/Delete", "admin"),
        ("/unknown.Service/Method", "admin"),
    ],
)
def test_required_role(method, role):
    assert required_role(method) == role


def test_role_order():
    assert allows("admin", "/unknown.S/M") and not allows("operator", "/unknown.S/M")
    assert allows("operator", "/cellar.v1.Cells/List") and not allows("observer", "/cellar.v1.Cells/Freeze")
    assert not allows(None, "/grpc.health.v1.Health/Check")


def test_cert_role_mapping_wins_and_role_san_needs_trust():
    uri = ("cellar://role/admin/bob",)
    assert cert_role(("bob",), uri, AuthConfig(identities={"bob": "observer"})) == ("bob", "observer")
    assert cert_role(("bob",), uri, AuthConfig()) == ("bob", None)
    assert cert_role(("bob",), uri, AuthConfig(trust_cert_role=True)) == ("bob", "admin")
    assert cert_role(("bob",), ("spiffe://x/admin",), AuthConfig(identities={"spiffe://x/admin": "admin"})) == \
        ("bob", None)  # only the CN is an identity


def test_a_certificate_naming_two_identities_or_none_is_refused():
    for cns, uris in ((("x",), ("cellar://role/admin/bob",)), (("bob",), ("cellar://role/root/bob",)),
                      ((), ("cellar://role/admin/bob",)), (("bob", "eve"), ()), (("",), ()),
                      (("bob",), ("cellar://role/admin/bob", "cellar://role/observer/bob"))):
        with pytest.raises(CertificateRefused):
            cert_role(cns, uris, AuthConfig(trust_cert_role=True, identities={"bob": "admin"}))
