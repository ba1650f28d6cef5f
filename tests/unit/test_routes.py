"""`workers.routes` names where each event goes; `workers.registry` binds each route to its handler. The
outbox writer needs only the names, so importing it must not import the handlers (which import it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from domain import events
from workers.registry import HANDLERS
from workers.routes import QUEUES, RETIRED, ROUTES, Route, route_of

ROOT = Path(__file__).resolve().parents[2]


def test_every_route_has_exactly_one_consumer_with_its_queue_and_actor_and_nothing_else_has_one():
    assert {cls: Route(c.queue_name, c.actor_name) for cls, c in HANDLERS.items()} == ROUTES | RETIRED
    assert set(ROUTES).isdisjoint(RETIRED)


def test_route_of_finds_the_route_of_every_consumed_type_and_none_for_the_rest():
    assert {t: route_of(t) for t in events.EVENT_TYPES} == {t: ROUTES.get(cls) for t, cls in events.EVENT_TYPES.items()}
    assert route_of("AccountRemoved") is None
    assert route_of("NoSuchEvent") is None


def test_queues_are_the_routes_queues():
    assert QUEUES == ("account-validation", "badges", "org-sync", "tags")


def test_the_outbox_writer_and_the_publisher_import_no_handler():
    code = (
        "import sys, workers.deps, workers.publisher; "
        "print(sorted(m for m in ('workers.registry', 'workers.handlers', 'workers.tagging', 'workers.validation')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


IMPORT_EACH_FIRST = """
import importlib, sys
for first in ("workers.handlers", "workers.tagging", "workers.validation", "workers.deps", "workers.registry"):
    for name in [m for m in sys.modules if m == "workers" or m.startswith("workers.")]:
        del sys.modules[name]
    importlib.import_module(first)
    print(first, len(importlib.import_module("workers.actors").HANDLERS))
"""


def test_each_worker_module_imports_first_without_a_cycle():
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_FIRST], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:-1] == [
        f"{m} {len(ROUTES) + len(RETIRED)}"
        for m in ("workers.handlers", "workers.tagging", "workers.validation", "workers.deps", "workers.registry")
    ]
