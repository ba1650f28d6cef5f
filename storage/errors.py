"""Errors storage raises in the vocabulary of its callers, so that no driver or SQLAlchemy exception
crosses the boundary of storage/ (see also `storage.db.outage_reason`)."""

from __future__ import annotations

from domain.errors import Conflict


class Duplicate(Conflict):
    """A write broke a uniqueness rule (an organization, nickname or account stored already, perhaps by a
    concurrent writer). Callers usually re-raise it as a Conflict naming what the user gave."""
