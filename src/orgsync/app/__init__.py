"""The composition root and the entry points: settings, wiring, the `orgsync` CLI, the demo."""
