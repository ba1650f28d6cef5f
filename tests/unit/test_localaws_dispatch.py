"""The local AWS server's shortcuts around moto: the cached application lookup, the function names."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import permutations
from typing import Any

import pytest
from moto.core.utils import method_names_from_class
from moto.iam.responses import IamResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.organizations.responses import OrganizationsResponse
from moto.sts.responses import TokenResponse

from localaws import patches
from localaws.patches import _FunctionNames
from localaws.server import _scope_key, cached_dispatcher

HOST = "127.0.0.1:5000"


def _environ(service: str | None, region: str = "us-east-1", path: str = "/", host: str = HOST) -> dict[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "HTTP_HOST": host, "REQUEST_METHOD": "POST", "QUERY_STRING": ""}
    if service is not None:
        environ["HTTP_AUTHORIZATION"] = (
            f"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20240101/{region}/{service}/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=abc"
        )
    return environ


@pytest.fixture(scope="module")
def dispatchers() -> Iterator[tuple[Any, Any]]:
    yield cached_dispatcher(create_backend_app), DomainDispatcherApplication(create_backend_app)


REQUESTS = [
    ("sts", "us-east-1"),
    ("organizations", "us-east-1"),
    ("iam", "us-east-1"),
    ("sts", "eu-west-1"),
    ("organizations", "eu-west-1"),
    ("IAM", "us-east-1"),
]


@pytest.mark.parametrize("order", [*permutations(range(3)), (5, 4, 3, 2, 1, 0)])
def test_each_service_and_region_reaches_its_own_application(
    dispatchers: tuple[Any, Any], order: tuple[int, ...]
) -> None:
    cached, plain = dispatchers
    for _ in range(2):  # the second round answers from the cache
        for index in order:
            service, region = REQUESTS[index]
            app = cached.get_application(_environ(service, region))
            assert app.service == service.lower()
            assert app.service == plain.get_application(_environ(service, region)).service
    assert cached.scope_apps[(HOST, "us-east-1", "sts")].service == "sts"


def test_requests_moto_routes_otherwise_are_not_cached(dispatchers: tuple[Any, Any]) -> None:
    cached, plain = dispatchers
    others = [
        _environ("s3"),
        _environ(None),
        _environ("sts", path="/moto-api/reset"),
        _environ("organizations", path="/latest/meta-data/iam"),
    ]
    for environ in others:
        assert _scope_key(environ) is None
        assert cached.get_application(dict(environ)).service == plain.get_application(dict(environ)).service
    assert _scope_key({**_environ(None), "HTTP_AUTHORIZATION": "garbage"}) is None
    assert _scope_key({**_environ(None), "HTTP_AUTHORIZATION": "AWS AKIAEXAMPLE:signature"}) is None
    assert _scope_key(_environ("sts", host="sts.amazonaws.com")) == ("sts.amazonaws.com", "us-east-1", "sts")


@pytest.mark.parametrize("response_class", [TokenResponse, IamResponse, OrganizationsResponse])
def test_function_names_answer_like_moto_s_list(response_class: type) -> None:
    was_installed = patches.is_installed()
    patches.install()  # adds IamResponse.simulate_principal_policy, a function moto lacks
    try:
        names = method_names_from_class(response_class)
        lazy = _FunctionNames(response_class)
        assert list(lazy) == names
        assert len(lazy) == len(names)
        assert all(name in lazy for name in names)
        others = [n for n in dir(response_class) if n not in names] + ["mro", "no_such_action", "", "__class__"]
        assert not any(name in lazy for name in others)
        assert 42 not in lazy  # type: ignore[comparison-overlap]
    finally:
        if not was_installed:
            patches.uninstall()
