"""Helpers the tests share: plain functions and constants, imported by the tests that use them.

Fixtures stay in the conftest.py files; everything else lives here, one module per concern:
`services` (which Postgres and RabbitMQ a run uses), `runtime` (an orgsync Runtime in this process),
`cli` (the CLI in this process) and `processes` (orgsync as processes).
"""
