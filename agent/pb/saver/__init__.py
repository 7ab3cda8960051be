"""The worker saver: a ``pb.WorkerSaver`` server that stores machine reports (SQLite or PostgreSQL).

Runs inside cellard (``[saver] enabled = true``) or alone (``cellar-saver``). Modules: validation
(what a report may hold), store (the storage interface) with sqlite_store / postgres_store, servicers
(gRPC adapters for pb.WorkerSaver and cellar.v1.Machines), main (the standalone server).
"""
