"""Start the OFFICIAL client's own loop (scaleout==1.0.0 ``ImporterClient.start()``), as
``scaleout client start --combiner HOST --combiner-port PORT --local-package -i ID -n NAME`` does.

Run with the scaleout venv's python, cwd = a directory holding ``client/scaleout.yaml``:

    <venv>/bin/python client_loop_start.py HOST PORT CLIENT_ID NAME

The one step added to what the CLI does: the EdgeClient's id and name are set before ``start()``. In
1.0.0 only the discovery-service path (``EdgeClient.connect_to_api``) sets them; with ``--combiner`` the
version check (run before the package's ``startup``) would send ``client-id: None`` metadata, which grpc
refuses client-side ("bad argument type for built-in operation"). Everything after that is the
library's: version check, compute package ``startup``, Connect, the TaskReceiver's PollAndReport
loop, telemetry, download, the train callback, upload, SendModelUpdate, status, Disconnect on SIGTERM.
"""

from __future__ import annotations

import sys

from scaleout.client.connect import ClientOptions
from scaleout.client.importer_client import ImporterClient


def main() -> None:
    host, port, client_id, name = sys.argv[1:5]
    options = ClientOptions(name=name, package="local", preferred_combiner="", client_id=client_id)
    client = ImporterClient(api_url=None, client_obj=options, combiner_host=host, combiner_port=port)
    client.edge_client.set_client_id(client_id)
    client.edge_client.set_name(name)
    client.start()


if __name__ == "__main__":
    main()
