"""How fast the local AWS builds and serves a 10,000-account org (timings are printed, not asserted)."""

from __future__ import annotations

import time
import tracemalloc

import boto3

from localaws import LocalAwsServer, build_org, generate_org, local_aws


def test_build_ten_thousand_accounts_with_ten_tags() -> None:
    started = time.perf_counter()
    spec = generate_org(10_000, seed=0, tags_per_account=10)
    generated = time.perf_counter() - started
    with local_aws():
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        org = build_org(spec)
        built = time.perf_counter() - started
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        started = time.perf_counter()
        organizations = boto3.client("organizations", region_name="us-east-1")
        paginator = organizations.get_paginator("list_accounts_for_parent")
        seen = 0
        parents = [org.root_id, *org.units.values()]
        for parent in parents:
            seen += sum(len(p["Accounts"]) for p in paginator.paginate(ParentId=parent))
        walked = time.perf_counter() - started
    assert len(org.accounts) == 10_001
    assert seen == 10_001
    print(
        f"\n10,000 accounts x 10 tags: generate {generated:.2f}s, build {built:.2f}s (under tracemalloc), "
        f"build memory {(current - before) / 1e6:.1f} MB (peak {(peak - before) / 1e6:.1f} MB), "
        f"{len(parents)} parents walked in-process in {walked:.2f}s"
    )


def test_build_time_without_tracing() -> None:
    spec = generate_org(10_000, seed=1, tags_per_account=10)
    with local_aws():
        started = time.perf_counter()
        org = build_org(spec)
        built = time.perf_counter() - started
        tags = boto3.client("organizations", region_name="us-east-1").list_tags_for_resource(
            ResourceId=org.accounts[-1].account_id
        )["Tags"]
    print(f"\nbuild_org(10,000 accounts x 10 tags): {built:.2f}s")
    assert len(org.accounts) == 10_001
    assert {t["Key"]: t["Value"] for t in tags} == org.accounts[-1].tags
    assert len(org.accounts[-1].tags) == 10


def test_server_with_ten_thousand_accounts() -> None:
    started = time.perf_counter()
    with LocalAwsServer(accounts=10_000, tags_per_account=10) as aws:
        ready = time.perf_counter() - started
        organizations = aws.client("organizations")
        started = time.perf_counter()
        total = sum(len(p["Accounts"]) for p in organizations.get_paginator("list_accounts").paginate())
        listed = time.perf_counter() - started
        started = time.perf_counter()
        assert aws.org is not None
        sample = aws.org.accounts[:500]
        tags = {a.account_id: organizations.list_tags_for_resource(ResourceId=a.account_id)["Tags"] for a in sample}
        tagged = time.perf_counter() - started
    assert total == 10_001
    assert {k: {t["Key"]: t["Value"] for t in v} for k, v in tags.items()} == {a.account_id: a.tags for a in sample}
    print(
        f"\nserver with 10,000 accounts ready in {ready:.2f}s; ListAccounts (501 pages) {listed:.2f}s; "
        f"500 ListTagsForResource {tagged:.2f}s"
    )
