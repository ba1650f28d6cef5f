"""The web console in a real browser (Debian's chromium through Selenium), over orgsync started as processes
the way a user starts it: `orgsync worker` on RabbitMQ, a token from `orgsync tokens create`, `orgsync api`,
and the local AWS. An admin signs in (after a wrong token), adds an organization (first with a wrong
management external id: refused beside the field, nothing stored), watches its sync finish, follows the
account count to exactly the organization's accounts with their statuses, opens an account, edits the
filters keeping the stored credentials, looks at the operations page and signs out. No page ever holds a
secret, and an account name with HTML in it shows as text. Each page is saved to docs/console/."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from localaws import LocalAwsServer
from localaws.builder import BuiltAccount, BuiltOrg
from workers.routes import QUEUES

from ..support.processes import ROOT, free_port, orgsync, service_env, start_workers, stop_workers
from ..support.runtime import expected_statuses
from ..support.services import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "docs" / "console"
MANAGEMENT_EXTERNAL_ID = "mgmt-ext-5d1e9a"
MEMBER_EXTERNAL_ID = "member-ext-77b0c3"
WRONG_EXTERNAL_ID = "not-the-ext-id-4242"
HTML_NAME = "<b>x</b>&\"'"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        why = f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(f"the console's browser test needs Debian's chromium: {why}")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the HTTP status of each page
    # the driver's path given: Selenium Manager is never asked to find (or download) anything
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def aws_with_html_name() -> Iterator[LocalAwsServer]:
    """A small organization (a suspended account, a missing and a wrong-external-id member role) and one
    more account, created through AWS's API, whose name is HTML."""
    with LocalAwsServer(
        accounts=10,
        seed=23,
        suspended=1,
        missing_role=1,
        wrong_external_id=1,
        external_id=MANAGEMENT_EXTERNAL_ID,
        member_external_id=MEMBER_EXTERNAL_ID,
    ) as server:
        org = built(server)
        status = server.client("organizations").create_account(AccountName=HTML_NAME, Email="html@example.com")
        account_id = status["CreateAccountStatus"]["AccountId"]
        org.accounts.append(
            BuiltAccount(
                account_id,
                HTML_NAME,
                "html@example.com",
                "ACTIVE",
                False,
                org.root_id,
                [org.root_id],
                ["Root"],
                {},
                "missing",
            )
        )
        server.set_member_role(account_id, "ok")
        yield server


def built(server: LocalAwsServer) -> BuiltOrg:
    assert server.org is not None
    return server.org


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = orgsync(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def raw_credentials(database_url: str, nickname: str) -> bytes:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT credentials FROM organizations WHERE nickname = %s", (nickname,)).fetchone()
    assert row is not None
    return bytes(row[0])


def wait_until(test: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# what check_accessible reads of a page: language, headings, controls without a label, images without alt,
# and the contrast ratio of each kind of text (the first visible element of each selector) with the
# background behind it (the nearest ancestor that paints one)
ACCESSIBILITY_PROBE = """
const controls = [...document.querySelectorAll("input, select, textarea")].filter(
  (e) => !["hidden", "submit", "button"].includes(e.type));
const unlabeled = controls.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
  && !e.getAttribute("aria-labelledby")).map((e) => e.name || e.id);
const rgb = (text) => (text.match(/[0-9.]+/g) || []).map(Number);
const luminance = ([r, g, b]) => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
};
const behind = (element) => {
  for (let e = element; e; e = e.parentElement) {
    const color = rgb(getComputedStyle(e).backgroundColor);
    if (color.length === 3 || (color.length === 4 && color[3] > 0)) return color.slice(0, 3);
  }
  return [255, 255, 255];
};
const contrast = {};
for (const selector of ["body", "h1", "a", ".muted", "label", "th", "td", "button", ".button", ".pill", ".chip",
                        ".alert", ".field-error", ".notice", "header a", "header"]) {
  const element = [...document.querySelectorAll(selector)].find(
    (e) => (e === document.body || e.offsetParent !== null) && e.textContent.trim() !== "");
  if (!element) continue;
  const [a, b] = [luminance(rgb(getComputedStyle(element).color).slice(0, 3)), luminance(behind(element))];
  contrast[selector] = Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 100) / 100;
}
return {lang: document.documentElement.lang, h1: document.querySelectorAll("h1").length, unlabeled,
        no_alt: [...document.images].filter((i) => !i.alt).length, contrast};
"""


def node_gone(exc: WebDriverException) -> bool:
    """Does the error say the element's node is no longer in the page? (chromium says so in two ways)"""
    return isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc)


def left(page: Any) -> Any:
    """A wait condition: the browser has left the page whose root element is `page`."""

    def check(_: WebDriver) -> bool:
        try:
            page.is_enabled()
        except WebDriverException as exc:
            if node_gone(exc):
                return True
            raise
        return False

    return check


class Console:
    """The browser on the console: every page it shows is kept (to look for secrets in) and can be saved."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver, self.base = driver, base
        self.sources: dict[str, str] = {}

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.keep()

    def keep(self) -> None:
        self.sources[f"{len(self.sources):02d} {self.path}"] = self.driver.page_source
        self.check_accessible()

    def check_accessible(self) -> None:
        """Every page: its language, one h1, a label for every control, an alt text for every image, and
        text that meets WCAG AA's contrast (4.5:1) against what is behind it, for each kind of text."""
        found = self.driver.execute_script(ACCESSIBILITY_PROBE)
        where = self.path
        assert (found["lang"], found["h1"]) == ("en", 1), where
        assert found["unlabeled"] == [], where
        assert found["no_alt"] == 0, where
        assert {"body", "h1", "a"} <= set(found["contrast"]), where  # measured, not skipped
        assert {k: v for k, v in found["contrast"].items() if v < 4.5} == {}, (where, found["contrast"])

    def sign_in_by_keyboard(self, token: str) -> None:
        """Tab to the token field from the top of the page, type the token, press Enter."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.TAG_NAME, "body").click()
        for _ in range(10):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            if self.driver.switch_to.active_element.get_attribute("id") == "token":
                break
        else:
            raise AssertionError("the token field cannot be reached with the Tab key")
        self.driver.switch_to.active_element.send_keys(token + Keys.ENTER)
        WebDriverWait(self.driver, 30).until(left(page))
        WebDriverWait(self.driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        self.keep()

    @property
    def path(self) -> str:
        url = self.driver.current_url
        assert url.startswith(self.base), url
        return url[len(self.base) :]

    def statuses(self) -> list[int]:
        """The HTTP statuses of the pages loaded since the last call (redirects followed), in order."""
        found = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.responseReceived" and message["params"]["type"] == "Document":
                found.append(int(message["params"]["response"]["status"]))
        return found

    def one(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            box = self.driver.find_element(By.ID, name)
            box.clear()
            box.send_keys(value)

    def click(self, element: Any) -> None:
        """Click a link or a submit button and wait for the page it leads to."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        try:
            element.click()
        except WebDriverException as exc:
            # chromium may report the clicked node as gone when the click itself already led to the next
            # page; the wait below tells (a click that did not happen never leaves the page)
            if not node_gone(exc):
                raise
        WebDriverWait(self.driver, 30).until(left(page))
        WebDriverWait(self.driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        self.keep()

    def submit(self, css: str) -> None:
        self.click(self.one(css))

    def shot(self, name: str) -> None:
        """Save the whole page as docs/console/<name>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(1366, min(max(height, 900), 4000))
        self.driver.execute_script("window.scrollTo(0, 0)")
        try:
            assert self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        finally:
            self.driver.set_window_size(1366, 900)

    def card(self, nickname: str) -> Any:
        return next(c for c in self.all(".org-card") if c.find_element(By.CSS_SELECTOR, ".org-name").text == nickname)

    def wait_for_sync(self, nickname: str, timeout: float = 90) -> None:
        """Until the card says the sync succeeded and follows no running request (the page reloads itself
        when the one it follows is done)."""

        def finished(_: WebDriver) -> bool:
            card = self.card(nickname)
            running = card.find_elements(By.CSS_SELECTOR, "[data-request]")
            return not running and card.find_element(By.CSS_SELECTOR, ".sync-status").text == "succeeded"

        WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(finished)
        self.keep()


def test_an_admin_adds_an_org_follows_its_accounts_edits_it_and_signs_out(
    browser: WebDriver,
    aws_with_html_name: LocalAwsServer,
    database_url,
    amqp_url,
    encryption_key,
    tmp_path,
    start_service,
):
    server = aws_with_html_name
    org = built(server)
    env = service_env(server, database_url, amqp_url, encryption_key, tmp_path)
    workers = start_workers(env, tmp_path / "worker.log")
    try:
        admin = cli_json(env, "tokens", "create", "--name", "admin", "--role", "admin")["token"]
        port = free_port()
        api = start_service("api", ["api", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(port, "/healthz"), 60, "orgsync api answering /healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/signin", timeout=5) as response:
            headers = response.headers
        assert (headers["Content-Security-Policy"], headers["X-Content-Type-Options"], headers["Referrer-Policy"]) == (
            CSP,
            "nosniff",
            "same-origin",
        )
        console = Console(browser, base)

        # 1. sign in: a wrong token first
        console.get("/")
        assert console.path == "/signin"
        console.shot("signin")
        console.fill(token="osk_" + "W" * 43)
        console.submit("form[action='/signin'] button[type=submit]")
        assert console.statuses()[-1] == 401
        assert console.one("#signin-error").text == "That token is not valid: it is unknown, revoked or mistyped."
        assert browser.get_cookie("orgsync_session") is None
        console.sign_in_by_keyboard(admin)  # a keyboard alone signs in
        assert console.path == "/orgs"
        session_cookie = browser.get_cookie("orgsync_session")
        assert session_cookie is not None
        assert (session_cookie["httpOnly"], session_cookie["sameSite"], session_cookie["path"]) == (True, "Strict", "/")
        assert console.one(".who-name").text == "admin"
        assert console.all(".org-card") == []

        # 2. add the organization: a wrong management external id is refused beside the field
        console.click(console.one("#add-org"))
        assert console.path == "/orgs/new"
        console.fill(
            nickname="acme",
            org_role_arn=org.management_role_arn,
            org_external_id=WRONG_EXTERNAL_ID,
            member_role_name=org.member_role_name,
            member_external_id=MEMBER_EXTERNAL_ID,
        )
        assert console.one("#member-arn-preview").text == f"arn:aws:iam::<account-id>:role/{org.member_role_name}"
        console.statuses()
        console.submit("#submit-org")
        assert console.statuses() == [422]
        assert console.path == "/orgs/new"
        refusal = f"AssumeRole {org.management_role_arn} refused: AccessDenied"
        assert console.one("#org_external_id-error").text.startswith(refusal)
        assert console.one("#org_role_arn-error").text.startswith(refusal)
        assert console.one("#org_external_id").get_attribute("aria-invalid") == "true"
        kept = {
            n: console.one(f"#{n}").get_attribute("value") for n in ("nickname", "org_role_arn", "member_role_name")
        }
        assert kept == {
            "nickname": "acme",
            "org_role_arn": org.management_role_arn,
            "member_role_name": org.member_role_name,
        }
        assert [console.one(f"#{n}").get_attribute("value") for n in ("org_external_id", "member_external_id")] == [
            "",
            "",
        ]
        console.shot("add-organization-error")
        assert cli_json(env, "org", "list") == []

        console.fill(org_external_id=MANAGEMENT_EXTERNAL_ID, member_external_id=MEMBER_EXTERNAL_ID)
        console.submit("#submit-org")
        assert console.path == "/orgs"
        assert [c.find_element(By.CSS_SELECTOR, ".org-name").text for c in console.all(".org-card")] == ["acme"]

        # 3. the sync finishes; the account count leads to exactly the org's accounts with their statuses
        console.wait_for_sync("acme")
        expected = expected_statuses(org)
        card = console.card("acme")
        assert card.find_element(By.CSS_SELECTOR, ".cloud-org-id").text == org.org_id
        assert card.find_element(By.CSS_SELECTOR, ".account-count").text == str(len(expected))
        console.shot("organizations")
        console.click(card.find_element(By.CSS_SELECTOR, ".account-count"))
        assert console.path == f"/clouds?badge=system.cloud_organization%3D{org.org_id}"
        shown = {
            row.get_attribute("data-account-id"): row.find_element(By.CSS_SELECTOR, ".cloud-status").get_attribute(
                "data-status"
            )
            for row in console.all("tr[data-account-id]")
        }
        listed = cli_json(env, "cloud", "list", "--badge", f"system.cloud_organization={org.org_id}")
        assert shown == expected == {c["account_id"]: c["status"] for c in listed}
        assert console.all("#next-page") == []
        html_account = next(a.account_id for a in org.accounts if a.name == HTML_NAME)
        html_row = console.one(f"tr[data-account-id='{html_account}']")
        assert html_row.find_element(By.CSS_SELECTOR, ".cloud-name").text == HTML_NAME
        assert "&lt;b&gt;x&lt;/b&gt;" in browser.page_source
        assert browser.find_elements(By.XPATH, "//b") == []
        console.shot("accounts")

        # 4. one account: its OU path, status, badges and the SCPs that apply
        deepest = max(
            (a for a in org.accounts if expected[a.account_id] == "ok"),
            key=lambda a: (len(a.ou_path_ids), a.account_id),
        )
        console.click(console.one(f"tr[data-account-id='{deepest.account_id}'] a.account-link"))
        assert console.path == f"/clouds/{deepest.account_id}"
        stored = cli_json(env, "cloud", "show", deepest.account_id)
        assert console.one(".ou-path").text == "/".join(deepest.ou_path_names) == stored["org_path"]
        assert console.one(".cloud-status").get_attribute("data-status") == "ok"
        assert {r.get_attribute("data-badge") for r in console.all("tr[data-badge]")} == set(stored["badges"])
        assert [e.text for e in console.all(".scp-name")] == [p["name"] for p in stored["service_control_policies"]]
        history = [r.text for r in console.all("#status-history .pill")]
        assert history == [h["status"] for h in stored["status_history"]] == ["ok"]  # pending, then ok once
        console.shot("account-detail")
        console.get(f"/clouds/{html_account}")
        assert console.one(".cloud-title").text == HTML_NAME
        assert browser.find_elements(By.XPATH, "//b") == []

        # 5. edit: every credential field left as it is, one more filter
        before = cli_json(env, "org", "show", "acme")
        sealed = raw_credentials(database_url, "acme")
        console.get("/orgs")
        console.click(console.card("acme").find_element(By.LINK_TEXT, "Edit"))
        assert console.path == f"/orgs/{before['id']}/edit"
        assert console.one("#org_role_arn").get_attribute("value") == org.management_role_arn
        assert console.one("#member_role_name").get_attribute("value") == org.member_role_name
        secrets_shown = [console.one(f"#{n}").get_attribute("value") for n in ("org_external_id", "member_external_id")]
        assert secrets_shown == ["", ""]
        console.fill(exclude_name_prefixes="zz-")
        console.shot("edit-organization")
        console.submit("#submit-org")
        assert console.path == "/orgs"
        assert console.one(".notice").text == "Saved exclude name prefixes; a sync is running."
        after = cli_json(env, "org", "show", "acme")
        assert after["filters"]["exclude_name_prefixes"] == ["zz-"]
        assert (after["management_role"], after["member_role"]) == (before["management_role"], before["member_role"])
        assert raw_credentials(database_url, "acme") == sealed
        console.wait_for_sync("acme")
        assert console.card("acme").find_element(By.CSS_SELECTOR, ".account-count").text == str(len(expected))

        # 6. operations: orgsync's queues, no dead letters
        console.get("/operations")
        assert [r.get_attribute("data-queue") for r in console.all("tr[data-queue]")] == list(QUEUES)
        assert (len(console.all("#no-dead-letters")), console.all("tr[data-letter]")) == (1, [])
        console.shot("operations")

        # 7. sign out: the session is gone
        console.submit("#sign-out")
        assert console.path == "/signin"
        assert browser.get_cookie("orgsync_session") is None
        console.get("/orgs")
        assert console.path == "/signin"

        secrets = [admin, MANAGEMENT_EXTERNAL_ID, MEMBER_EXTERNAL_ID, WRONG_EXTERNAL_ID, session_cookie["value"]]
        leaked = {page: s for page, source in console.sources.items() for s in secrets if s in source}
        assert leaked == {}
        assert api.problems() == []
    finally:
        stop_workers(workers)
