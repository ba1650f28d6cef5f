"""The top level is the architecture: who may import whom (house style), checked on the source itself,
imports inside functions and under TYPE_CHECKING included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "storage", "aws", "workers", "scheduler", "orgsync", "localaws"}

# package -> the packages of ours it may use (besides itself)
MAY_USE: dict[str, set[str]] = {
    "domain": set(),
    "storage": {"domain"},
    "aws": {"domain"},
    "workers": {"storage", "aws", "domain"},
    "scheduler": {"storage", "aws", "domain"},
    "orgsync": OURS - {"orgsync"},
}
AWS_SDK = {"boto3", "botocore"}
AWS_SDK_ALLOWED = {"aws", "localaws"}


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every absolute import in `path`."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(MAY_USE))
def test_a_package_imports_only_the_packages_it_may_use(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted((imported_roots(path) & OURS) - MAY_USE[package] - {package})
        for path in sources(package)
    }
    assert {path: names for path, names in wrong.items() if names} == {}


@pytest.mark.parametrize("package", sorted(OURS - AWS_SDK_ALLOWED))
def test_only_aws_and_localaws_import_boto3_or_botocore(package):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & AWS_SDK) for path in sources(package)}
    assert {path: names for path, names in wrong.items() if names} == {}
