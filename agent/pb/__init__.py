"""The ``pb`` family: this node's inventory reports to worker savers (``reporter``), the function and
server dispatchers, and the worker saver itself (``agent.pb.saver``, also a standalone service).

May import: ``observe`` (inventory), ``proto``, ``agent.core``, ``agent.auth``.
"""
