"""Local development environment: real Prometheus and real Triton as child processes on loopback.

Used by the integration tests and the demo (`make run`). Nothing here is imported by the operator.
"""
