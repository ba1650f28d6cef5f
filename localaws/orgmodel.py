"""Direct access to moto's Organizations model, shared by the builder and the patches.

moto keeps an organization's accounts in a plain list and finds them by linear search, which makes
DescribeAccount / ListTagsForResource O(n) per call on an org of 10,000 accounts. `AccountList` is a
list that also indexes accounts by id; the builder installs it and the patched lookups use it.
This module also maps an account's lifecycle `State` to the deprecated `Status`, finds the org an
account belongs to, collects the SCPs that apply to an account, and changes an account's state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, SupportsIndex

from moto.organizations.models import FakeAccount, OrganizationsBackend, organizations_backends

DEFAULT_PARTITION = "aws"
STATUS_FOR_STATE = {
    "ACTIVE": "ACTIVE",
    "PENDING_ACTIVATION": "ACTIVE",
    "SUSPENDED": "SUSPENDED",
    "PENDING_CLOSURE": "PENDING_CLOSURE",
    "CLOSED": "SUSPENDED",
}
SCP_TYPE = "SERVICE_CONTROL_POLICY"


def status_for_state(state: str) -> str:
    """The deprecated `Status` AWS still sends next to `State`."""
    try:
        return STATUS_FOR_STATE[state]
    except KeyError:
        raise ValueError(f"unknown account state {state!r}; expected one of {sorted(STATUS_FOR_STATE)}") from None


class AccountList(list[FakeAccount]):
    """moto's `backend.accounts`, plus an index by account id kept in step with every mutation."""

    def __init__(self, accounts: Iterable[FakeAccount] = ()) -> None:
        super().__init__(accounts)
        self._by_id: dict[str, FakeAccount] = {a.id: a for a in self}

    def _reindex(self) -> None:
        self._by_id = {a.id: a for a in self}

    def find(self, account_id: str) -> FakeAccount | None:
        account = self._by_id.get(account_id)
        if account is not None and account.id == account_id:
            return account
        for candidate in self:
            if candidate.id == account_id:
                self._by_id[account_id] = candidate
                return candidate
        return None

    def append(self, account: FakeAccount) -> None:
        super().append(account)
        self._by_id[account.id] = account

    def extend(self, accounts: Iterable[FakeAccount]) -> None:
        super().extend(accounts)
        self._reindex()

    def insert(self, index: SupportsIndex, account: FakeAccount) -> None:
        super().insert(index, account)
        self._by_id[account.id] = account

    def remove(self, account: FakeAccount) -> None:
        super().remove(account)
        if self._by_id.get(account.id) is account:
            del self._by_id[account.id]

    def pop(self, index: SupportsIndex = -1) -> FakeAccount:
        account = super().pop(index)
        if self._by_id.get(account.id) is account:
            del self._by_id[account.id]
        return account

    def clear(self) -> None:
        super().clear()
        self._by_id.clear()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._reindex()

    def __delitem__(self, index: Any) -> None:
        super().__delitem__(index)
        self._reindex()


def find_account(backend: OrganizationsBackend, account_id: str) -> FakeAccount | None:
    accounts = backend.accounts
    if isinstance(accounts, AccountList):
        return accounts.find(account_id)
    return next((a for a in accounts if a.id == account_id), None)


def existing_backend(account_id: str, partition: str = DEFAULT_PARTITION) -> OrganizationsBackend | None:
    """The Organizations backend of `account_id` if moto has one (never creates it)."""
    per_account = dict.get(organizations_backends, account_id)
    if per_account is None:
        return None
    backend: OrganizationsBackend | None = dict.get(per_account, partition)
    return backend


def org_backend_for(account_id: str) -> OrganizationsBackend | None:
    """The management account's backend of the org `account_id` belongs to (it may be that account)."""
    entry = organizations_backends.master_accounts.get(account_id)
    management_id, partition = entry if entry else (account_id, DEFAULT_PARTITION)
    backend = existing_backend(management_id, partition)
    if backend is None or backend.org is None:
        return None
    return backend


def scp_levels(account_id: str) -> list[list[Mapping[str, Any]]] | None:
    """SCP documents attached at each level down to the account (root first), or None outside an org."""
    backend = org_backend_for(account_id)
    if backend is None:
        return None
    account = find_account(backend, account_id)
    if account is None:
        return None
    units = {ou.id: ou for ou in backend.ou}
    chain: list[Any] = []
    parent_id: str | None = account.parent_id
    while parent_id in units and len(chain) <= len(units):
        chain.append(units[parent_id])
        parent_id = units[parent_id].parent_id
    holders: list[Any] = [*reversed(chain), account]
    levels = [
        [json.loads(p.content) for p in holder.attached_policies if p.type == SCP_TYPE and p.content]
        for holder in holders
    ]
    if not any(levels):
        return None
    return levels


def set_account_state(account_id: str, state: str, *, legacy_status: bool | None = None) -> None:
    """Set an account's lifecycle `State` (and the matching `Status`); optionally its legacy flag."""
    status = status_for_state(state)
    backend = org_backend_for(account_id)
    account = find_account(backend, account_id) if backend is not None else None
    if account is None:
        raise KeyError(f"account {account_id} is not in any organization of the local AWS")
    account.state = state
    account.status = status
    if legacy_status is not None:
        setattr(account, "legacy_status", legacy_status)  # noqa: B010 - an attribute moto does not declare
