"""Which events are facts (published to `orgsync.events` for other services): the past-tense ones,
never the `...Requested` / `...Due` triggers. A new event type must take a side here."""

from __future__ import annotations

from domain.events import EVENT_TYPES
from workers.routes import FACTS, is_fact


def test_facts_are_the_past_tense_events_and_only_those():
    triggers = {t for t in EVENT_TYPES if t.endswith(("Requested", "Due"))}
    assert {t for t in EVENT_TYPES if is_fact(t)} == set(EVENT_TYPES) - triggers
    assert sorted(FACTS) == ["AccountDiscovered", "AccountRemoved", "AccountValidated", "OrgSyncCompleted"]
