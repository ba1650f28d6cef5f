"""orgsync's composition root and entry points: settings, wiring, the `orgsync` CLI, the demo.

The rest of the system sits beside this package: `domain` (the rules), `storage` (Postgres),
`aws` (boto3), `workers` (dramatiq), `scheduler`, and `localaws` (the local AWS for demo and tests).
"""

__version__ = "0.1.0"
