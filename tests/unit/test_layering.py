"""The top level is the architecture: who may import whom (house style), checked on the source itself,
imports inside functions and under TYPE_CHECKING included."""

from __future__ import annotations

import ast
import sys
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
# third-party libraries only some packages may import: library roots -> the packages that may
THIRD_PARTY_ONLY_IN: dict[frozenset[str], frozenset[str]] = {
    frozenset({"sqlalchemy", "psycopg", "alembic"}): frozenset({"storage"}),
    frozenset({"boto3", "botocore"}): frozenset({"aws", "localaws"}),
    frozenset({"dramatiq", "pika"}): frozenset({"workers", "orgsync"}),
}


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


@pytest.mark.parametrize(
    ("libraries", "package"),
    [(libraries, package) for libraries, allowed in THIRD_PARTY_ONLY_IN.items() for package in sorted(OURS - allowed)],
    ids=lambda value: "+".join(sorted(value)) if isinstance(value, frozenset) else value,
)
def test_a_library_is_imported_only_by_the_packages_that_wrap_it(libraries, package):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & libraries) for path in sources(package)}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_domain_imports_only_the_standard_library():
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) - sys.stdlib_module_names - {"domain"})
        for path in sources("domain")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_checks_see_imports_inside_functions_and_under_type_checking(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.orm import Session\n"
        "def f():\n"
        "    import psycopg\n"
        "    from . import sibling\n"
        "    return psycopg\n"
    )
    assert imported_roots(source) == {"typing", "sqlalchemy", "psycopg"}
