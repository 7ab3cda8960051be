"""file.v1.File: durable per-scope files with parigot semantics."""
