"""Shared runtime plumbing for the gRPC services.

settings (pydantic-settings), logging (JSON lines), errors (the domain error tree), auth (JWT roles
and method policy), interceptors (request id, metrics, error mapping, auth), server (bootstrap, health,
reflection, ordered shutdown), clients (outbound channels) and tokens (development tokens). Import the
submodules directly; this package does nothing on import.
"""
