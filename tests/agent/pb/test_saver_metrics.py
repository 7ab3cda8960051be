"""cellar-saver --metrics-listen: the standalone saver's own /metrics (its counters, RPCs, build info) and /healthz."""

from __future__ import annotations

from agent.version import VERSION
from proto.pb import workerServer_pb2 as pb
from proto.pb import workerServer_pb2_grpc
from tests.agent.core.test_metrics import scrape, value
from tests.agent.core.test_metrics_ecosystem import get
from tests.agent.pb.conftest import free_port


def test_the_standalone_saver_has_a_metrics_listener(saver_factory, tmp_path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    saver = saver_factory(str(tmp_path / "saver.sqlite"), "--metrics-listen", metrics)
    with saver.channel() as ch:
        stub = workerServer_pb2_grpc.WorkerSaverStub(ch)
        assert stub.SaveMachine(pb.SaveMachineReq(machine=pb.Machine(uuid="m-1")), timeout=10).status == \
            pb.SaveMachineRes.ACCEPTED
        assert stub.SaveMachine(pb.SaveMachineReq(), timeout=10).status == pb.SaveMachineRes.NOT_ACCEPTED
    f = scrape(metrics)
    assert value(f, "cellar_saver_reports_received", "cellar_saver_reports_received_total") == 2
    assert value(f, "cellar_saver_reports_stored", "cellar_saver_reports_stored_total") == 1
    assert value(f, "cellar_saver_reports_rejected", "cellar_saver_reports_rejected_total") == 1
    assert value(f, "grpc_server_handled", "grpc_server_handled_total", grpc_service="pb.WorkerSaver",
                 grpc_method="SaveMachine", grpc_code="OK") == 2
    assert value(f, "cellar_build_info", "cellar_build_info", version=VERSION) == 1
    assert "cellar_cell_pids" not in f  # no cells in a saver
    assert saver.events("saver.metrics_listening")
    assert get(metrics, "/healthz")[::2] == (200, "SERVING\n")
    assert get(metrics, "/")[0] == 404
