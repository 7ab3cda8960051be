"""The runtime and logs APIs: Aurae's ``runtime.CellService`` and ``observe.Observe``, cellar's
``cellar.v1`` Cells and Logs, as thin adapters (proto <-> ``cells``/``observe`` domain, one call,
error kinds -> status).

May import: ``cells``, ``observe``, ``proto``, ``agent.core``, ``agent.auth``, ``agent.config``.
"""
