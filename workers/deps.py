"""What handlers need from the outside world, handed in by the composition root (orgsync)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aws.session import AwsGateway
from domain.errors import PermanentError
from storage.inventory import Inventory
from storage.unit_of_work import UnitOfWork
from storage.vault import KeyRing


@dataclass
class Deps:
    uow: UnitOfWork[Inventory]
    keyring: Callable[[], KeyRing]
    aws: AwsGateway
    walk_concurrency: int = 8


def unknown_org(org_id: uuid.UUID) -> PermanentError:
    """The dead-letter reason of a message naming an organization that does not exist (its id was
    checked by `events.decode`; the org is absent: never registered, or removed since)."""
    return PermanentError(f"org_id {org_id}: no such organization")
