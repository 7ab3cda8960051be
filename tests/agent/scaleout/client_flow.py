"""Drive the OFFICIAL scaleout client library (scaleout==1.0.0) through one task, deterministically.

Run with the scaleout venv's python (NOT cellar's: the client pins its own grpcio/protobuf):

    <venv>/bin/python client_flow.py HOST PORT CLIENT_ID [--seconds N]

Prints one JSON object per line on stdout, for the test to follow:
``{"event": "ready"}`` after version check + connect + a heartbeat, then polls with the library's
PollAndReport until a task arrives, reports it RUNNING, downloads the model through the library
(which verifies the trailing SHA-256 checksum), uploads an update (checksum sent as metadata),
sends the model update, a metric, telemetry, attributes and a status, reports done and disconnects.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from types import SimpleNamespace

import scaleoututil.grpc.scaleout_pb2 as msg
from scaleout.client.grpc_handler import GrpcHandler
from scaleoututil.utils.model import ScaleoutModel


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main() -> int:
    host, port, client_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--seconds" else 60.0
    client = SimpleNamespace(client_id=client_id, name=f"{client_id}-name")
    handler = GrpcHandler(client, host=host, port=port)

    ok, server_version, message = handler.check_version_compatibility()
    emit("version_check", success=ok, server_version=server_version, message=message)
    handler.connect()
    handler.heartbeat()
    emit("ready")

    deadline = time.monotonic() + seconds
    task = None
    while time.monotonic() < deadline:
        task = handler.PollAndReport(msg.ActivityReport(node_id=client_id, status=""))
        if task.correlation_id:
            break
        handler.heartbeat()
        time.sleep(0.2)
    if task is None or not task.correlation_id:
        emit("no_task")
        return 2
    emit("task", correlation_id=task.correlation_id, type=task.type, model_id=task.model_id, status=task.status,
         data=task.data)

    running = handler.PollAndReport(msg.ActivityReport(node_id=client_id, correlation_id=task.correlation_id,
                                                       status="RUNNING", done=False))
    emit("running_ack", correlation_id=running.correlation_id, status=running.status)

    model = handler.get_model_from_combiner(task.model_id)  # raises ValueError on a checksum mismatch
    data = model.get_stream().read()
    emit("downloaded", size=len(data), checksum=model.checksum)

    update = ScaleoutModel.from_stream(SimpleNamespace(read=_reader(data[::-1])))
    update.model_id = str(uuid.uuid4())
    reply = handler.send_model_to_combiner(update)
    emit("uploaded", model_id=update.model_id, status=msg.ModelStatus.Name(reply.status), message=reply.message,
         checksum=update.checksum)

    handler.send_model_update(model_id=task.model_id, model_update_id=update.model_id,
                              correlation_id=task.correlation_id, round_id=task.round_id, session_id=task.session_id,
                              meta={"training_metadata": {"num_examples": 42, "epochs": 1}, "config": task.data})
    handler.send_model_metric(handler.create_metric_message({"loss": 0.25}, 1, task.model_id, task.session_id,
                                                            task.round_id))
    telemetry = msg.TelemetryMessage(client_id=client_id)
    telemetry.telemetries.add(key="cpu_usage", value=12.5)
    handler.send_telemetry(telemetry)
    attributes = msg.AttributeMessage(client_id=client_id)
    attributes.attributes.add(key="accelerator", value="none")
    handler.send_attributes(attributes)
    handler.send_status("model update completed", log_level=msg.LogLevel.AUDIT, type="MODEL_UPDATE")
    emit("update_sent", model_update_id=update.model_id)

    after = handler.PollAndReport(msg.ActivityReport(node_id=client_id, correlation_id=task.correlation_id,
                                                     status="COMPLETED", done=True,
                                                     response=json.dumps({"num_examples": 42})))
    emit("done_reported", next_correlation_id=after.correlation_id)
    handler.disconnect()
    emit("disconnected")
    handler.channel.close()
    return 0


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    pos = 0

    def read(n: int = -1) -> bytes:
        nonlocal pos
        chunk = data[pos:] if n < 0 else data[pos:pos + n]
        pos += len(chunk)
        return chunk

    return read


if __name__ == "__main__":
    sys.exit(main())
