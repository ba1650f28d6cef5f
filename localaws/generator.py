"""Deterministic, realistic organization specs for the local AWS (pure data, no moto, no boto3).

`generate_org` produces a nested OU tree (up to `max_depth` levels below the root, e.g.
Root/Prod/Data/Analytics/EU/Team1), accounts spread over every level including the root, a handful
of suspended / closing accounts, accounts whose member role is missing or expects another external
id, a few accounts that only report the legacy `Status`, and tags. The same arguments always give
the same spec. OUs are named by stable keys (their name path) since AWS ids only exist after
building.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MemberRoleKind = Literal["ok", "missing", "wrong_external_id"]
MEMBER_ROLE_KINDS: tuple[MemberRoleKind, ...] = ("ok", "missing", "wrong_external_id")
ACCOUNT_STATES = ("ACTIVE", "PENDING_ACTIVATION", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")
MANAGEMENT_ACCOUNT_ID = "123456789012"

TOP_LEVEL = ["Prod", "Sandbox", "Security", "Workloads", "Staging", "Dev", "Infrastructure", "SharedServices"]
DOMAINS = ["Data", "Platform", "Payments", "Identity", "Web", "Mobile", "Core", "ML", "Search", "Billing"]
SUBDOMAINS = ["Analytics", "Ingest", "Reporting", "Streaming", "Api", "Batch", "Storage", "Edge", "Ops"]
REGIONS = ["EU", "US", "APAC", "LATAM"]
TEAM = "Team"
LEVEL_NAMES = [TOP_LEVEL, DOMAINS, SUBDOMAINS, REGIONS]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"]
ENVS = {"prod": "prod", "staging": "staging", "dev": "dev", "sandbox": "sandbox"}
TEAMS = ["data", "platform", "payments", "identity", "web", "mobile", "secops", "sre", "ml", "finance"]
EXTRA_TAG_KEYS = [
    "owner",
    "data-classification",
    "project",
    "compliance",
    "backup",
    "business-unit",
    "support-tier",
    "managed-by",
    "lifecycle",
    "region-scope",
    "criticality",
    "contact",
]
EXTRA_TAG_VALUES = {
    "data-classification": ["public", "internal", "confidential", "restricted"],
    "compliance": ["pci", "sox", "hipaa", "none"],
    "backup": ["daily", "weekly", "none"],
    "support-tier": ["gold", "silver", "bronze"],
    "managed-by": ["terraform", "cdk", "console"],
    "lifecycle": ["active", "deprecated", "experimental"],
    "region-scope": ["eu", "us", "global"],
    "criticality": ["high", "medium", "low"],
}


@dataclass(frozen=True)
class UnitSpec:
    """An OU: `key` is stable (the name path, e.g. "prod/data"); `parent_key` None means the root."""

    key: str
    name: str
    parent_key: str | None


@dataclass
class AccountSpec:
    account_id: str
    name: str
    email: str
    parent_key: str | None
    state: str = "ACTIVE"
    legacy_status: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    member_role: MemberRoleKind = "ok"


@dataclass
class OrgSpec:
    units: list[UnitSpec]
    accounts: list[AccountSpec]

    def unit(self, key: str) -> UnitSpec:
        for unit in self.units:
            if unit.key == key:
                return unit
        raise KeyError(key)

    def depth(self, key: str | None) -> int:
        """Levels below the root: 0 for the root itself, 1 for a top-level OU."""
        by_key = {u.key: u for u in self.units}
        depth = 0
        while key is not None:
            depth += 1
            key = by_key[key].parent_key
        return depth

    def to_json(self) -> dict[str, Any]:
        return {"units": [asdict(u) for u in self.units], "accounts": [asdict(a) for a in self.accounts]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrgSpec:
        return cls(
            units=[UnitSpec(**u) for u in data["units"]],
            accounts=[AccountSpec(**{**a, "tags": dict(a.get("tags", {}))}) for a in data["accounts"]],
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json())


def _default_count(accounts: int, per: int) -> int:
    return 0 if accounts < 10 else max(1, accounts // per)


def _account_ids(rng: random.Random, count: int) -> list[str]:
    seen: set[str] = {MANAGEMENT_ACCOUNT_ID}
    ids: list[str] = []
    while len(ids) < count:
        candidate = f"{rng.randrange(10**12):012d}"
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


def _build_units(rng: random.Random, accounts: int, max_depth: int) -> list[UnitSpec]:
    """A tree of OUs whose size grows with the org; one chain always reaches `max_depth`."""
    if max_depth <= 0:
        return []
    target = max(max_depth, min(2000, accounts // 12))
    units: list[UnitSpec] = []
    keys: set[str] = set()

    def add(name: str, parent: UnitSpec | None) -> UnitSpec:
        key = name.lower() if parent is None else f"{parent.key}/{name.lower()}"
        unit = UnitSpec(key=key, name=name, parent_key=None if parent is None else parent.key)
        units.append(unit)
        keys.add(key)
        return unit

    def names_for(depth: int) -> list[str]:
        if depth - 1 < len(LEVEL_NAMES):
            return LEVEL_NAMES[depth - 1]
        return [f"{TEAM}{i}" for i in range(1, 13)]

    top_count = min(len(TOP_LEVEL), 3 + target // 10)
    top = [add(name, None) for name in TOP_LEVEL[:top_count]]
    chain_parent = top[0]
    for depth in range(2, max_depth + 1):
        chain_parent = add(names_for(depth)[0], chain_parent)

    frontier: list[tuple[UnitSpec, int]] = [(u, 1) for u in top]
    while len(units) < target and frontier:
        parent, depth = frontier.pop(0)
        if depth >= max_depth:
            continue
        fanout = rng.randint(1, 4) if depth < 3 else rng.randint(1, 3)
        options = names_for(depth + 1)
        for name in rng.sample(options, min(fanout, len(options))):
            key = f"{parent.key}/{name.lower()}"
            if len(units) >= target:
                break
            if key in keys:
                existing = next(u for u in units if u.key == key)
                frontier.append((existing, depth + 1))
                continue
            frontier.append((add(name, parent), depth + 1))
    return units


def _name_stem(unit_path: list[str]) -> str:
    return "-".join(p.lower() for p in unit_path[:2]) or "core"


def _tags(rng: random.Random, env: str, count: int) -> dict[str, str]:
    tags: dict[str, str] = {}
    base = [
        ("env", env),
        ("team", rng.choice(TEAMS)),
        ("cost-center", f"cc-{rng.randint(1000, 1099)}"),
    ]
    for key, value in base[:count]:
        tags[key] = value
    extra = count - len(tags)
    for i in range(max(0, extra)):
        if i < len(EXTRA_TAG_KEYS):
            key = EXTRA_TAG_KEYS[i]
            values = EXTRA_TAG_VALUES.get(key)
            if values:
                value = rng.choice(values)
            elif key in ("owner", "contact"):
                value = f"{rng.choice(PEOPLE)}@example.com"
            else:
                value = f"{key}-{rng.randint(1, 40)}"
        else:
            key, value = f"tag-{i:02d}", f"value-{rng.randint(1, 99)}"
        tags[key] = value
    return tags


def generate_org(
    accounts: int,
    *,
    seed: int = 0,
    max_depth: int = 5,
    suspended: int | None = None,
    missing_role: int | None = None,
    wrong_external_id: int | None = None,
    tags_per_account: int = 3,
    legacy_status: int = 0,
    sandbox_prefix_share: float = 0.1,
) -> OrgSpec:
    """A deterministic org of `accounts` member accounts (the management account is added by the builder).

    `suspended` accounts are not ACTIVE: exactly one of them is PENDING_CLOSURE when there are at
    least two, the others SUSPENDED (default: 1 per 100 accounts, none below 10 accounts).
    `missing_role` / `wrong_external_id` accounts have no member role / a member role expecting
    another external id (default: 1 per 100 each); these three sets never overlap, and the
    `legacy_status` accounts (only the deprecated `Status`) are picked among the rest.
    A share `sandbox_prefix_share` of the accounts is named `sandbox-...`.
    """
    if accounts < 0:
        raise ValueError("accounts must be >= 0")
    if max_depth < 0:
        raise ValueError("max_depth must be >= 0")
    suspended = _default_count(accounts, 100) if suspended is None else suspended
    missing_role = _default_count(accounts, 100) if missing_role is None else missing_role
    wrong_external_id = _default_count(accounts, 100) if wrong_external_id is None else wrong_external_id
    special = suspended + missing_role + wrong_external_id
    if min(suspended, missing_role, wrong_external_id, legacy_status, tags_per_account) < 0:
        raise ValueError("counts must be >= 0")
    if special > accounts:
        raise ValueError("suspended + missing_role + wrong_external_id exceeds the number of accounts")
    if legacy_status > accounts - special:
        raise ValueError("legacy_status exceeds the accounts left after the special ones")

    rng = random.Random(f"orgsync-localaws:{seed}")
    units = _build_units(rng, accounts, max_depth)
    by_key = {u.key: u for u in units}

    def path_names(key: str | None) -> list[str]:
        names: list[str] = []
        while key is not None:
            names.append(by_key[key].name)
            key = by_key[key].parent_key
        return names[::-1]

    sandbox_units = [u.key for u in units if u.key.split("/")[0] == "sandbox"]
    other_units = [u.key for u in units if u.key.split("/")[0] != "sandbox"] or sandbox_units
    deepest = [u.key for u in units if len(u.key.split("/")) == max_depth]

    ids = _account_ids(rng, accounts)
    sandbox_count = round(accounts * max(0.0, min(1.0, sandbox_prefix_share)))
    parents: list[str | None] = []
    for i in range(accounts):
        if i == 0 or (units and rng.random() < 0.02) or not units:
            parents.append(None)
        elif i == 1 and deepest:
            parents.append(deepest[0])
        elif i < sandbox_count + 2 and i >= 2 and sandbox_units and rng.random() < 0.8:
            parents.append(rng.choice(sandbox_units))
        else:
            parents.append(rng.choice(other_units))

    counters: dict[str, int] = {}
    specs: list[AccountSpec] = []
    for i, (account_id, parent) in enumerate(zip(ids, parents, strict=True)):
        names = path_names(parent)
        stem = f"sandbox-{rng.choice(PEOPLE)}" if 2 <= i < sandbox_count + 2 else _name_stem(names)
        counters[stem] = counters.get(stem, 0) + 1
        name = f"{stem}-{counters[stem]:04d}"
        top = names[0].lower() if names else "core"
        env = ENVS.get(top, "shared" if top not in ("security", "infrastructure") else top)
        specs.append(
            AccountSpec(
                account_id=account_id,
                name=name,
                email=f"aws+{name}@example.com",
                parent_key=parent,
                tags=_tags(rng, env, tags_per_account),
            )
        )

    order = list(range(accounts))
    rng.shuffle(order)
    cursor = 0
    for n in range(suspended):
        spec = specs[order[cursor + n]]
        spec.state = "PENDING_CLOSURE" if (n == 0 and suspended >= 2) else "SUSPENDED"
    cursor += suspended
    for n in range(missing_role):
        specs[order[cursor + n]].member_role = "missing"
    cursor += missing_role
    for n in range(wrong_external_id):
        specs[order[cursor + n]].member_role = "wrong_external_id"
    cursor += wrong_external_id
    for n in range(legacy_status):
        specs[order[cursor + n]].legacy_status = True
    return OrgSpec(units=units, accounts=specs)
