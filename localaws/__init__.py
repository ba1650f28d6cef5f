"""A local AWS for orgsync's demo, tests and benchmarks: moto, patched to behave like AWS where it matters.

Import-light on purpose: names are loaded on first use, so importing this package neither imports
boto3 nor starts anything (moto must be active before any boto3 client exists).

    from localaws import generate_org, local_aws, LocalAwsServer, faults, trail
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import faults as faults
    from . import trail as trail
    from .builder import BuiltAccount, BuiltOrg, build_org, set_account_state, set_member_role
    from .client import LocalAwsError, LocalAwsServer
    from .generator import AccountSpec, OrgSpec, UnitSpec, generate_org
    from .inprocess import local_aws
    from .patches import install, is_installed, uninstall
    from .registry import REGISTRY, MemberRole

_EXPORTS = {
    "AccountSpec": "generator",
    "OrgSpec": "generator",
    "UnitSpec": "generator",
    "generate_org": "generator",
    "BuiltAccount": "builder",
    "BuiltOrg": "builder",
    "build_org": "builder",
    "set_account_state": "builder",
    "set_member_role": "builder",
    "LocalAwsError": "client",
    "LocalAwsServer": "client",
    "local_aws": "inprocess",
    "install": "patches",
    "uninstall": "patches",
    "is_installed": "patches",
    "REGISTRY": "registry",
    "MemberRole": "registry",
}

__all__ = [
    "REGISTRY",
    "AccountSpec",
    "BuiltAccount",
    "BuiltOrg",
    "LocalAwsError",
    "LocalAwsServer",
    "MemberRole",
    "OrgSpec",
    "UnitSpec",
    "build_org",
    "faults",
    "generate_org",
    "install",
    "is_installed",
    "local_aws",
    "set_account_state",
    "set_member_role",
    "trail",
    "uninstall",
]


def __getattr__(name: str) -> Any:
    if name in ("faults", "trail"):
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
