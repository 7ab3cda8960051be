"""The node-local endpoint: a second gRPC server for workloads, and who is calling it."""
