"""Reading an AWS Organization: describe it, walk its tree top-down, read account tags.

The walk costs O(OUs + accounts/20) calls: ListRoots once, then per parent one
ListOrganizationalUnitsForParent and (for parents in scope) ListAccountsForParent pages of 20. Parents
of one level are listed concurrently. A page that fails after botocore's retries marks the tree
incomplete instead of failing the whole walk, so upserts still happen but removals do not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from domain.errors import AccountNotInOrganization, AwsStepFailed, RetryLater
from domain.scp import Policy, Target
from domain.tree import Account, OrgTree, OrgUnit, lifecycle_state, scope_units

from .session import CallScope, error_code, error_message

log = logging.getLogger(__name__)
PAGE = 20
# the codes of ListTagsForResource for an account not (any more) in the organization, and for a refusal
ACCOUNT_GONE_CODES = frozenset({"AccountNotFoundException", "TargetNotFoundException"})
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
        """Every root and OU of the organization; raises AwsStepFailed if any level cannot be read."""
        failures: list[str] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="walk") as pool:
            units = self._walk_units(pool, failures)
        if failures:
            raise AwsStepFailed("list organizational units", failures[0])
        return units

    def walk(self, limit_to_ou_ids: Iterable[str] = ()) -> OrgTree:
        """Every OU of the org, and the accounts of the parents in scope.

        OUs are always listed in full (their names form each account's path); accounts are listed
        only under the limited OUs and their descendants when a limit is given.
        """
        failures: list[str] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="walk") as pool:
            units = self._walk_units(pool, failures)
            parents = sorted(scope_units(units, limit_to_ou_ids))

            def list_accounts(parent: str) -> tuple[str, list[dict[str, Any]] | None]:
                try:
                    return parent, list(self.pages("list_accounts_for_parent", "Accounts", ParentId=parent))
                except (ClientError, BotoCoreError) as exc:
                    failures.append(f"ListAccountsForParent {parent}: {_describe(exc)}")
                    return parent, None

            accounts: list[Account] = []
            for parent, found in pool.map(CallScope.bound(list_accounts), parents):
                for a in found or ():
                    accounts.append(
                        Account(
                            id=a["Id"],
                            name=a.get("Name") or a["Id"],
                            email=a.get("Email") or "",
                            state=lifecycle_state(a.get("State"), a.get("Status")),
                            parent_id=parent,
                        )
                    )
        if failures:
            log.warning("organization walk incomplete: %s", "; ".join(failures[:5]))
        return OrgTree(units=units, accounts=tuple(accounts), complete=not failures, failures=tuple(failures))

    def _walk_units(self, pool: ThreadPoolExecutor, failures: list[str]) -> dict[str, OrgUnit]:
        """Roots, then the OUs of each level's parents concurrently; failed parents go to `failures`."""
        try:
            roots = list(self.pages("list_roots", "Roots"))
        except (ClientError, BotoCoreError) as exc:
            raise AwsStepFailed("list roots", _describe(exc)) from None
        units: dict[str, OrgUnit] = {r["Id"]: OrgUnit(r["Id"], r.get("Name") or "Root", None) for r in roots}

        def list_units(parent: str) -> tuple[str, list[dict[str, Any]] | None]:
            try:
                return parent, list(
                    self.pages("list_organizational_units_for_parent", "OrganizationalUnits", ParentId=parent)
                )
            except (ClientError, BotoCoreError) as exc:
                failures.append(f"ListOrganizationalUnitsForParent {parent}: {_describe(exc)}")
                return parent, None

        level = [r["Id"] for r in roots]
        while level:
            next_level: list[str] = []
            for parent, children in pool.map(CallScope.bound(list_units), level):
                for ou in children or ():
                    units[ou["Id"]] = OrgUnit(ou["Id"], ou.get("Name") or ou["Id"], parent)
                    next_level.append(ou["Id"])
            level = next_level
        return units

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
