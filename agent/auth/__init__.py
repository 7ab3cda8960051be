"""Who is calling and what they may do: the peer proxies (Unix sockets by SO_PEERCRED, loopback TCP
by sock_diag), a caller's identity and scope, the mTLS front, TLS credentials and the PKI, the role
table (authz), grants to cells, admin-only request content.

``tls`` (client credentials) and ``pki`` (``cellar pki``) serve the CLI too; the rest is cellard's.
May import: ``cells``, ``observe``, ``agent.config``, ``agent.metadata``.
"""
