"""The ``startup`` entry point of the tiny compute package the official client's own loop runs.

Copied by ``client_loop.write_compute_package`` into ``<workdir>/client/startup.py`` next to a
``scaleout.yaml`` naming it; the official client (``scaleout==1.0.0``, its own venv) imports it and
calls ``startup(edge_client)`` before starting its polling loop. Runs under the scaleout venv, never
under cellar's.

Training is deterministic and local: the update is the downloaded model's bytes reversed, one metric is
logged through the client's own ``log_metric`` (so the library sends it with the task's context), and
``num_examples``/``epochs`` come from the task's ``client_settings``.
"""

from __future__ import annotations

import io
import os
from typing import Any

from scaleoututil.utils.model import ScaleoutModel


def startup(client: Any) -> None:
    # `scaleout client start --combiner` skips the discovery service, which is the only place 1.0.0
    # sets the EdgeClient's id and name (--client-id/--name only reach ClientOptions): without this
    # every call would carry `client-id: None` and grpc refuses to send it.
    if client.client_id is None:
        client.set_client_id(os.environ["EDGE_CLIENT_ID"])
        client.set_name(os.environ["EDGE_CLIENT_NAME"])

    def train(model: ScaleoutModel, settings: dict[str, Any]) -> tuple[ScaleoutModel, dict[str, Any]]:
        data = model.get_stream().read()
        client.log_metric({"loss": 0.25, "bytes": float(len(data))})
        update = ScaleoutModel.from_stream(io.BytesIO(data[::-1]))
        return update, {"training_metadata": {"num_examples": int(settings["num_examples"]),
                                              "epochs": int(settings["epochs"])}}

    client.set_train_callback(train)
