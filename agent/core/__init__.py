"""cellard's server core: the App, the gRPC server and its listeners' lifecycle, health, metrics,
the supervisor's log relay, stream caps, and error kinds -> gRPC status.

May import: ``cells``, ``observe``, ``proto``, ``agent.config``, ``agent.auth``, and the API families
it registers (``agent.core.services`` builds them); the families import the core, never each other.
"""
