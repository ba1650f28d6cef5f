"""At AWS's limit: with Organizations throttled by a token bucket in the local AWS, a tag refresh on
default settings ends with every account's tags stored, no message failed, and the workers' rate lowered
to what the bucket allows."""

from __future__ import annotations

from sqlalchemy import select

from domain import events
from localaws import faults
from localaws.builder import BuiltOrg
from localaws.faults import RateLimit
from orgsync import services
from storage import repository as repo
from storage.models import Cloud

from ..support.runtime import add_and_sync


def test_a_refresh_at_the_limit_stores_every_accounts_tags(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws)
    ceiling = rt.aws.rate("organizations").ceiling
    faults.configure(rate_limits={"organizations": RateLimit(rate=10, burst=5)})
    faults.reset_stats()
    try:
        request_id = services.request_event(rt, registered.org_id, lambda o: events.TagRefreshDue(o))
        result = services.wait_for(rt, request_id, timeout=120)
        stats = faults.stats()
    finally:
        faults.clear()
    assert (result.ok, result.failures) == (True, [])
    # the bucket held back calls, so the limit was reached; the throttled ones were retried, not lost
    assert stats["throttled"].get("organizations:ListTagsForResource", 0) > 0
    assert stats["calls"]["organizations:ListTagsForResource"] - stats["throttled"][
        "organizations:ListTagsForResource"
    ] == len(aws.accounts)
    assert rt.aws.rate("organizations").rate < ceiling
    assert rt.aws.totals.total_throttles == sum(stats["throttled"].values())
    with rt.sessions() as s:
        stored = {a: repo.tags_of(s, c) for a, c in s.execute(select(Cloud.account_id, Cloud.id)).all()}
    assert stored == {a.account_id: a.tags for a in aws.accounts}
