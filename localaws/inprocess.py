"""The local AWS inside the current process, for unit tests: `with local_aws(spec) as org: ...`.

It makes sure boto3 clients created inside the block talk to moto (dummy credentials, no
AWS_ENDPOINT_URL), installs the patches for the duration of the block, builds the org, and on exit
stops the mock and forgets the faults, statistics, registry and org membership it created, and the
Organizations events' queue (`localaws.trail.configure(queue_url)` turns them on inside the block).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .generator import OrgSpec

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
UNSET_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_ORGANIZATIONS", "AWS_ENDPOINT_URL_IAM")


@contextmanager
def _environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*DUMMY_ENV, *UNSET_ENV)}
    try:
        for name, dummy in DUMMY_ENV.items():
            os.environ.setdefault(name, dummy)
        for name in UNSET_ENV:
            os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def local_aws(spec: OrgSpec | None = None, **build_kwargs: Any) -> Iterator[Any]:
    """Yield the `BuiltOrg` of `spec` (None without a spec) inside an active, patched moto mock."""
    from moto import mock_aws
    from moto.organizations.models import organizations_backends

    from . import faults, patches, trail
    from .builder import build_org
    from .registry import REGISTRY

    was_installed = patches.is_installed()
    built = None
    with _environment():
        mock = mock_aws()
        mock.start()
        try:
            patches.install()
            built = build_org(spec, **build_kwargs) if spec is not None else None
            yield built
        finally:
            trail.reset()
            mock.stop()
            if built is not None:
                for account in built.accounts:
                    organizations_backends.master_accounts.pop(account.account_id, None)
            faults.clear()
            faults.reset_stats()
            REGISTRY.clear()
            if not was_installed:
                patches.uninstall()
