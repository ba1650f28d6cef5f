"""The HTTP API and the web console over a synced organization of 10,000 accounts: how long each page takes.

A local AWS with a generated organization; orgsync deployed on a scratch database and vhost with its
workers; the org added and synced (`org add --wait`); an admin token (`orgsync tokens create`); then
`orgsync api` as a process. Requests go over one keep-alive HTTP connection, as a client's would, one at
a time; each answer's `Server-Timing: app;dur=…` is the server's time, the client's wall time includes
the loopback and the parsing of the JSON.

Figures (p50 / p95 / max of the server's time, and the client's p95):
- every page of `GET /api/v1/clouds?limit=100`, following `next_cursor` to the end (keyset: each page
  is one index range scan, so the last page costs what the first does), unfiltered and filtered by the
  org's badge, by status, and by a name search;
- `GET /api/v1/clouds/{account_id}` of 200 accounts, `GET /api/v1/orgs` and `/api/v1/orgs/{org}`;
- the console's pages (signed in through its form): organizations, the accounts listing (first page, a
  page deep in by its cursor, filtered by the org's badge), an account's page, the add form, operations.

    .venv/bin/python bench/api.py [--accounts 10000] [--page 100] [--rounds 5] [--json]

Everything it starts (local AWS, workers, the API, database, vhost) is removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import report
from report import percentile
from stack import BenchError, Deployment, Stack, log, orgsync_process, printed

TARGET_PAGE_P95_MS = 50.0  # a page of /api/v1/clouds
TARGET_CONSOLE_MS = 200.0  # a console page, server time
DETAILS = 200
_TIMING = re.compile(r"app;dur=([0-9.]+)")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Timings:
    """Server and client milliseconds of the requests of one kind."""

    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "requests": len(self.server_ms),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_p50_ms": ms(percentile(self.server_ms, 0.5)),
            "server_p95_ms": ms(percentile(self.server_ms, 0.95)),
            "server_max_ms": ms(max(self.server_ms) if self.server_ms else None),
            "client_p95_ms": ms(percentile(self.client_ms, 0.95)),
        }


class Client:
    """One keep-alive connection to the API; every answer's timing kept under a label."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token
        self.cookies: dict[str, str] = {}
        self.timings: dict[str, Timings] = {}

    def request(
        self, label: str, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, http.client.HTTPResponse]:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=sent)
        response = self.connection.getresponse()
        text = response.read().decode()
        client_ms = (time.perf_counter() - started) * 1000
        for header in response.headers.get_all("set-cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        timing = _TIMING.search(response.headers.get("server-timing", ""))
        kind = self.timings.setdefault(label, Timings())
        kind.statuses[response.status] = kind.statuses.get(response.status, 0) + 1
        kind.client_ms.append(client_ms)
        if timing:
            kind.server_ms.append(float(timing[1]))
        return response.status, text, response

    def api(self, label: str, path: str) -> Any:
        status, text, _ = self.request(label, "GET", path, headers={"Authorization": f"Bearer {self.token}"})
        if status != 200:
            raise BenchError(f"GET {path}: {status} {text[:200]}")
        return json.loads(text)

    def page(self, label: str, path: str) -> str:
        status, text, _ = self.request(label, "GET", path)
        if status != 200:
            raise BenchError(f"GET {path}: {status} {text[:200]}")
        return text


def every_page(client: Client, label: str, query: dict[str, str], limit: int) -> list[dict[str, Any]]:
    """Every account the listing gives for `query`, page by page along `next_cursor`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**query, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = client.api(label, "/api/v1/clouds?" + urllib.parse.urlencode(params))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def sign_in(client: Client) -> None:
    """Through the console's form, as a browser does: the form's CSRF token, then the token."""
    form = client.page("console sign-in form", "/signin")
    found = _CSRF.search(form)
    if found is None:
        raise BenchError("the sign-in form has no csrf field")
    body = urllib.parse.urlencode({"token": client.token, "csrf": found[1]}).encode()
    status, text, _ = client.request(
        "console sign-in",
        "POST",
        "/signin",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status not in (302, 303):
        raise BenchError(f"sign-in answered {status}: {text[:200]}")


def run(opts: argparse.Namespace) -> dict[str, Any]:
    with (
        Stack(accounts=opts.accounts, seed=opts.seed, latency_ms=0, rate_limits=None, timeout=opts.timeout) as stack,
        stack.deployment(opts.processes, opts.threads) as dep,
    ):
        log(f"org add --wait of {opts.accounts} accounts …")
        clock = time.monotonic()
        dep.add_org(timeout=opts.timeout)  # raises BenchError if it fails
        log(f"org added and synced in {time.monotonic() - clock:.1f}s")
        return measure(stack, dep, opts)


def measure(stack: Stack, dep: Deployment, opts: argparse.Namespace) -> dict[str, Any]:
    token = printed(dep.cli("tokens", "create", "--name", "bench", "--role", "admin", "--json", timeout=60), "token")
    port = opts.port
    log_path = stack.workdir / "api.log"
    with orgsync_process(
        {**dep.env, "ORGSYNC_LOG_FORMAT": "json"}, ["api", "--port", str(port)], log_path, stop_timeout=30
    ):
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"orgsync api did not answer within 60s; log:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        client = Client(port, token)
        org = client.api("orgs", "/api/v1/orgs")[0]
        badge = f"system.cloud_organization={org['cloud_org_id']}"
        listings: dict[str, int] = {}
        accounts: list[dict[str, Any]] = []
        for round_ in range(opts.rounds):
            accounts = every_page(client, "clouds page (all)", {}, opts.page)
            listings["all"] = len(accounts)
            listings["by badge"] = len(every_page(client, "clouds page (badge filter)", {"badge": badge}, opts.page))
            listings["status ok"] = len(every_page(client, "clouds page (status filter)", {"status": "ok"}, opts.page))
            listings["search"] = len(every_page(client, "clouds page (name search)", {"q": "sandbox"}, opts.page))
            client.api("orgs", "/api/v1/orgs")
            client.api("org", f"/api/v1/orgs/{org['nickname']}")
            log(f"round {round_ + 1}: {listings['all']} accounts listed by every page of {opts.page}")
        rng = random.Random(opts.seed)
        for account in rng.sample(accounts, min(DETAILS, len(accounts))):
            client.api("cloud detail", f"/api/v1/clouds/{account['account_id']}")

        console: dict[str, Any] = {"measured": False}
        try:
            sign_in(client)
        except BenchError as exc:
            console["why_not"] = str(exc)
        else:
            console["measured"] = True
            for _ in range(opts.rounds):
                client.page("console: organizations", "/orgs")
                first = client.page("console: accounts, first page", "/clouds")
                client.page(
                    "console: accounts by the org's badge", "/clouds?" + urllib.parse.urlencode({"badge": badge})
                )
                link = re.search(r'href="(/clouds\?[^"]*cursor=[^"]+)"', first)
                if link:
                    client.page("console: accounts, next page", link[1].replace("&amp;", "&"))
                for account in rng.sample(accounts, 10):
                    client.page("console: account", f"/clouds/{account['account_id']}")
                client.page("console: add organization form", "/orgs/new")
                client.page("console: operations", "/operations")
        return {
            "config": {
                "accounts": opts.accounts,
                "page": opts.page,
                "rounds": opts.rounds,
                "source": report.source_version(),
            },
            "listed": listings,
            "timings": {label: t.to_json() for label, t in client.timings.items()},
            "console": console,
            "targets": {"page_p95_ms": TARGET_PAGE_P95_MS, "console_ms": TARGET_CONSOLE_MS},
        }


def format_text(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"orgsync API and console: {c['accounts']:,} accounts (+ the management account), pages of {c['page']}, "
        f"{c['rounds']} rounds ({c['source']})",
        "  accounts listed by following next_cursor: " + ", ".join(f"{k} {v:,}" for k, v in r["listed"].items()),
        "",
        f"  {'request':44} {'n':>6} {'server p50':>11} {'p95':>8} {'max':>8} {'client p95':>11}",
    ]
    for label, t in r["timings"].items():
        lines.append(
            f"  {label:44} {t['requests']:>6} {_ms(t['server_p50_ms']):>11} {_ms(t['server_p95_ms']):>8} "
            f"{_ms(t['server_max_ms']):>8} {_ms(t['client_p95_ms']):>11}"
        )
    if not r["console"]["measured"]:
        lines.append(f"  console not measured: {r['console'].get('why_not')}")
    lines.append(
        f"  targets: a page of /api/v1/clouds p95 <= {r['targets']['page_p95_ms']:.0f} ms; "
        f"a console page <= {r['targets']['console_ms']:.0f} ms server time"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--page", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--port", type=int, default=18181)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", action="store_true")
    opts = p.parse_args()
    try:
        result = run(opts)
    except BenchError as exc:
        log(f"failed: {exc}")
        sys.exit(1)
    report.write(result, format_text, as_json=opts.json)


if __name__ == "__main__":
    main()
