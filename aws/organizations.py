"""Reading an AWS Organization: describe it, walk its tree top-down, read account tags.

The walk costs O(OUs + accounts/20) calls: ListRoots once, then per parent one
ListOrganizationalUnitsForParent and (for parents in scope) ListAccountsForParent pages of 20. A
parent is listed as soon as it is known, concurrently with the rest of the tree. A page that fails
after botocore's retries marks the tree incomplete instead of failing the whole walk, so upserts still
happen but removals do not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from domain.errors import AccountNotInOrganization, AwsStepFailed, RetryLater
from domain.scp import Policy, Target
from domain.tree import Account, OrgTree, OrgUnit, lifecycle_state, scope_units

from .session import CallScope, error_code, error_message

log = logging.getLogger(__name__)
PAGE = 20
SCP = "SERVICE_CONTROL_POLICY"
# the codes of ListTagsForResource for an account not (any more) in the organization, and for a refusal
ACCOUNT_GONE_CODES = frozenset({"AccountNotFoundException", "TargetNotFoundException"})
# ...and of ListParents / DescribeOrganizationalUnit for a child or an OU that does not exist (any more)
POLICY_GONE_CODES = frozenset({"PolicyNotFoundException"})
UNIT_GONE_CODES = frozenset(
    {"OrganizationalUnitNotFoundException", "ChildNotFoundException", "ParentNotFoundException", *ACCOUNT_GONE_CODES}
)
TAGS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})


@dataclass(frozen=True)
class OrganizationInfo:
    id: str
    management_account_id: str
    arn: str


class OrganizationsReader:
    """The management account's view of its organization."""

    def __init__(self, client: Any, *, concurrency: int = 8) -> None:
        self.client = client
        self.concurrency = max(1, concurrency)

    def describe(self) -> OrganizationInfo:
        try:
            org = self.client.describe_organization()["Organization"]
        except ClientError as exc:
            raise AwsStepFailed(
                "describe organization", f"{error_code(exc)}: {error_message(exc)}", code=error_code(exc)
            ) from None
        return OrganizationInfo(org["Id"], org["MasterAccountId"], org["Arn"])

    def pages(self, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            call_params = dict(params, MaxResults=PAGE)
            if token:
                call_params["NextToken"] = token
            response = getattr(self.client, operation)(**call_params)
            yield from response.get(key, [])
            token = response.get("NextToken")
            if not token:
                return

    def units(self) -> dict[str, OrgUnit]:
        """Every root and OU of the organization; raises AwsStepFailed if any parent cannot be read."""
        walk = _Walk(self, limits=None)
        walk.run()
        if walk.failures:
            raise AwsStepFailed("list organizational units", walk.failures[0])
        return walk.units

    def walk(self, limit_to_ou_ids: Iterable[str] = ()) -> OrgTree:
        """Every OU of the org, and the accounts of the parents in scope.

        OUs are always listed in full (their names form each account's path); accounts are listed
        only under the limited OUs and their descendants when a limit is given (NotFound names a
        limited OU that is not in the tree).
        """
        walk = _Walk(self, limits=frozenset(limit_to_ou_ids))
        walk.run()
        scope_units(walk.units, walk.limits or ())  # raises NotFound for a limited OU not in the tree
        if walk.failures:
            log.warning("organization walk incomplete: %s", "; ".join(walk.failures[:5]))
        accounts = tuple(a for parent in sorted(walk.accounts) for a in walk.accounts[parent])
        return OrgTree(units=walk.units, accounts=accounts, complete=not walk.failures, failures=tuple(walk.failures))

    def account_tags(self, account_id: str) -> dict[str, str]:
        """The account's tags (ListTagsForResource, every page), or a domain error saying what went wrong:

        * AccountNotInOrganization: AWS does not know the account in this organization (it left);
        * AwsStepFailed with the code: the management role may not read tags (access denied);
        * RetryLater: anything else (throttling after botocore's retries, a network error, any other
          error code), which a later attempt may get past.
        """
        try:
            return {t["Key"]: t["Value"] for t in self._tag_pages(account_id)}
        except ClientError as exc:
            code = error_code(exc)
            if code in ACCOUNT_GONE_CODES:
                raise AccountNotInOrganization(account_id) from None
            if code in TAGS_DENIED_CODES:
                raise AwsStepFailed("read account tags", f"ListTagsForResource refused: {code}", code=code) from None
            raise RetryLater(f"reading tags failed: {code}") from None
        except BotoCoreError as exc:
            raise RetryLater(f"reading tags failed: {type(exc).__name__}") from None

    # -- one resource at a time (live updates) --

    def account(self, account_id: str, *, parent_id: str | None = None) -> Account | None:
        """The account as AWS describes it now (its parent from ListParents, unless `parent_id` is known
        already), or None when it is not in the organization (any more). Errors as `account_tags`'."""
        found = self._one("describe the account", "DescribeAccount", ACCOUNT_GONE_CODES, AccountId=account_id)
        if found is None:
            return None
        a = found["Account"]
        parent = parent_id or self.parent(account_id)
        if parent is None:
            return None
        return Account(
            id=a["Id"],
            name=a.get("Name", ""),
            email=a.get("Email", ""),
            state=lifecycle_state(a.get("State"), a.get("Status")),
            parent_id=parent,
        )

    def parent(self, child_id: str) -> str | None:
        """The root or OU directly above an account or OU (ListParents), None when AWS does not know it."""
        found = self._one("list parents", "ListParents", UNIT_GONE_CODES, ChildId=child_id)
        parents = [] if found is None else found.get("Parents", [])
        return str(parents[0]["Id"]) if parents else None

    def unit(self, unit_id: str, *, parent_id: str | None = None) -> OrgUnit | None:
        """An OU with its parent (DescribeOrganizationalUnit, and ListParents unless `parent_id` is known:
        AWS cannot move an OU, so a stored OU's parent stays), None when it does not exist."""
        step = "describe the organizational unit"
        found = self._one(step, "DescribeOrganizationalUnit", UNIT_GONE_CODES, OrganizationalUnitId=unit_id)
        if found is None:
            return None
        parent = parent_id or self.parent(unit_id)
        return None if parent is None else OrgUnit(unit_id, found["OrganizationalUnit"]["Name"], parent)

    def policy(self, policy_id: str) -> Policy | None:
        """An SCP with its document (DescribePolicy), None when it does not exist (any more) or is not an SCP."""
        found = self._one("describe the policy", "DescribePolicy", POLICY_GONE_CODES, PolicyId=policy_id)
        if found is None:
            return None
        summary = found["Policy"].get("PolicySummary", {})
        if summary.get("Type", SCP) != SCP:
            return None
        return Policy(
            id=policy_id,
            name=summary.get("Name", policy_id),
            description=summary.get("Description", "") or "",
            aws_managed=bool(summary.get("AwsManaged", False)),
            content=found["Policy"].get("Content", ""),
        )

    def policies_for_target(self, target_id: str) -> list[str]:
        """The ids of the SCPs attached directly to an account, OU or root (ListPoliciesForTarget)."""
        try:
            pages = self.pages("list_policies_for_target", "Policies", TargetId=target_id, Filter=SCP)
            return sorted(str(p["Id"]) for p in pages)
        except ClientError as exc:
            code = error_code(exc)
            if code in TAGS_DENIED_CODES:
                message = f"ListPoliciesForTarget refused: {code}"
                raise AwsStepFailed("list policies for target", message, code=code) from None
            raise RetryLater(f"ListPoliciesForTarget failed: {code}") from None
        except BotoCoreError as exc:
            raise RetryLater(f"ListPoliciesForTarget failed: {type(exc).__name__}") from None

    def _one(self, step: str, operation: str, gone: frozenset[str], **params: Any) -> dict[str, Any] | None:
        """One call; None when `gone` says the resource does not exist, else errors as `account_tags`."""
        try:
            answer: dict[str, Any] = getattr(self.client, _snake(operation))(**params)
            return answer
        except ClientError as exc:
            code = error_code(exc)
            if code in gone:
                return None
            if code in TAGS_DENIED_CODES:
                raise AwsStepFailed(step, f"{operation} refused: {code}", code=code) from None
            raise RetryLater(f"{operation} failed: {code}") from None
        except BotoCoreError as exc:
            raise RetryLater(f"{operation} failed: {type(exc).__name__}") from None

    def _tag_pages(self, account_id: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            params: dict[str, Any] = {"ResourceId": account_id}
            if token:
                params["NextToken"] = token
            response = self.client.list_tags_for_resource(**params)
            yield from response.get("Tags", [])
            token = response.get("NextToken")
            if not token:
                return


class _Walk:
    """One top-down walk, pipelined: a parent's OUs and (when in scope) its accounts are listed as soon
    as the parent is known, `concurrency` calls at a time, without waiting for the rest of its level.

    With `limits` None only OUs are listed. A parent that fails after botocore's retries goes to
    `failures` (its subtree stays unknown); ListRoots failing raises AwsStepFailed.
    """

    def __init__(self, reader: OrganizationsReader, *, limits: frozenset[str] | None) -> None:
        self.reader = reader
        self.limits = limits
        self.units: dict[str, OrgUnit] = {}
        self.accounts: dict[str, list[Account]] = {}
        self.failures: list[str] = []
        self._in_scope: dict[str, bool] = {}

    def run(self) -> None:
        try:
            roots = list(self.reader.pages("list_roots", "Roots"))
        except (ClientError, BotoCoreError) as exc:
            raise AwsStepFailed("list roots", _describe(exc)) from None
        with ThreadPoolExecutor(self.reader.concurrency, thread_name_prefix="walk") as pool:
            pending: set[Future[list[OrgUnit]]] = set()

            def visit(unit: OrgUnit) -> None:
                self.units[unit.id] = unit
                above = unit.parent_id is not None and self._in_scope[unit.parent_id]
                scoped = self.limits is not None and (not self.limits or above or unit.id in self.limits)
                self._in_scope[unit.id] = scoped
                pending.add(pool.submit(CallScope.bound(self._list_units), unit.id))
                if scoped:
                    pending.add(pool.submit(CallScope.bound(self._list_accounts), unit.id))

            for root in roots:
                visit(OrgUnit(root["Id"], root.get("Name") or "Root", None))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for unit in future.result():
                        visit(unit)

    def _list_units(self, parent: str) -> list[OrgUnit]:
        try:
            found = list(
                self.reader.pages("list_organizational_units_for_parent", "OrganizationalUnits", ParentId=parent)
            )
        except (ClientError, BotoCoreError) as exc:
            self.failures.append(f"ListOrganizationalUnitsForParent {parent}: {_describe(exc)}")
            return []
        return [OrgUnit(ou["Id"], ou.get("Name") or ou["Id"], parent) for ou in found]

    def _list_accounts(self, parent: str) -> list[OrgUnit]:
        """The parent's accounts into `accounts`; no OU to visit."""
        try:
            found = list(self.reader.pages("list_accounts_for_parent", "Accounts", ParentId=parent))
        except (ClientError, BotoCoreError) as exc:
            self.failures.append(f"ListAccountsForParent {parent}: {_describe(exc)}")
            return []
        self.accounts[parent] = [
            Account(
                id=a["Id"],
                name=a.get("Name") or a["Id"],
                email=a.get("Email") or "",
                state=lifecycle_state(a.get("State"), a.get("Status")),
                parent_id=parent,
            )
            for a in found
        ]
        return []


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {error_message(exc)}"
    return type(exc).__name__


def read_policies(client: Any, *, concurrency: int = 8) -> tuple[list[Policy], list[Target]]:
    """Every SCP of the organization with its document and targets (1 + 2 calls per policy, plus pages),
    the policies read concurrently."""
    reader = OrganizationsReader(client)

    def read(summary: dict[str, Any]) -> tuple[Policy, list[Target]]:
        described = client.describe_policy(PolicyId=summary["Id"])["Policy"]
        policy = Policy(
            id=summary["Id"],
            name=summary.get("Name", summary["Id"]),
            description=summary.get("Description", "") or "",
            aws_managed=bool(summary.get("AwsManaged", False)),
            content=described.get("Content", ""),
        )
        targets = [
            Target(summary["Id"], t["TargetId"], t.get("Type", ""), t.get("Name", "") or "")
            for t in reader.pages("list_targets_for_policy", "Targets", PolicyId=summary["Id"])
        ]
        return policy, targets

    try:
        summaries = list(reader.pages("list_policies", "Policies", Filter="SERVICE_CONTROL_POLICY"))
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="scps") as pool:
            read_all = list(pool.map(CallScope.bound(read), summaries))
    except ClientError as exc:
        raise AwsStepFailed("read service control policies", _describe(exc), code=error_code(exc)) from None
    return [p for p, _ in read_all], [t for _, targets in read_all for t in targets]


def _snake(operation: str) -> str:
    """botocore's method name of an API operation: DescribeAccount -> describe_account."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
