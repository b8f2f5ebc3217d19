"""The demo pages: served as they are, then used end to end in Debian's headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from ordercancel.config import Environment, Settings
from ordercancel.domain import CancellationReason, ProductionStatus
from ordercancel.storage import service
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER

BY_NUMBER_PAGE = "/api/demo/order-cancellation-by-number-api.htm"
BY_ID_PAGE = "/api/demo/order-cancellation-by-id-api.htm"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Where the screenshots of a test run go (gitignored).
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "demo"
#: The flags that run Debian's Chromium headless here without touching the network on its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1150",
]


# The pages as served ------------------------------------------------------------------------


@pytest.mark.parametrize("page", [BY_NUMBER_PAGE, BY_ID_PAGE])
def test_a_demo_page_is_served_as_html_that_may_talk_only_to_its_own_server(http: httpx.Client, page: str) -> None:
    response = http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert response.headers["x-ordercancel-environment"] == "sandbox"


def test_no_demo_asset_names_another_host(http: httpx.Client) -> None:
    texts = [http.get(path).text for path in (BY_NUMBER_PAGE, BY_ID_PAGE, "/api/demo/demo.js", "/api/demo/demo.css")]
    for text in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)
        assert "@import" not in text


def test_the_sandbox_page_offers_test_orders_and_the_production_page_does_not(settings: Settings) -> None:
    with LiveServer(settings) as sandbox:
        assert 'id="test-order-form"' in httpx.get(sandbox.url + BY_NUMBER_PAGE).text
    with LiveServer(replace(settings, environment=Environment.PRODUCTION)) as production:
        page = httpx.get(production.url + BY_NUMBER_PAGE).text
        assert 'id="test-order-form"' not in page
        assert 'data-environment="production"' in page


# In the browser -----------------------------------------------------------------------------


def _unavailable() -> str | None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        return f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, driven through Debian's chromedriver; never downloaded."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to read the console
    with tempfile.TemporaryDirectory(prefix="ordercancel-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


class DemoPage:
    """The demo page as a person uses it: fill in, choose, click, read."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait

        self._driver = driver
        self._by = By
        self._select = Select
        self._wait = WebDriverWait
        driver.get(url)

    def _element(self, element_id: str) -> Any:
        return self._driver.find_element(self._by.ID, element_id)

    def type(self, element_id: str, text: str) -> None:
        field = self._element(element_id)
        field.clear()
        field.send_keys(text)

    def choose(self, element_id: str, value: str) -> None:
        self._select(self._element(element_id)).select_by_value(value)

    def value(self, element_id: str) -> str:
        return str(self._element(element_id).get_attribute("value"))

    def source(self) -> str:
        return str(self._driver.page_source)

    def text(self, element_id: str) -> str:
        return str(self._element(element_id).text)

    def click_and_wait(self, button_id: str, expected_outcome: str) -> str:
        """Click, then wait until the outcome line says what it should; return that line."""
        before = self.text("outcome")
        self._element(button_id).click()
        self._wait(self._driver, 10).until(lambda _: self.text("outcome") != before and self.text("response") != "…")
        outcome = self.text("outcome")
        assert expected_outcome in outcome, outcome
        return outcome

    def click_and_wait_for(self, button_id: str, element_id: str, expected: str) -> str:
        """Click, then wait until an element (shown) says what it should; return its text."""
        self._element(button_id).click()
        self._wait(self._driver, 10).until(
            lambda _: expected in self.text(element_id) and self.text("response") not in ("", "…")
        )
        return self.text(element_id)

    def click(self, button_id: str) -> None:
        self._element(button_id).click()

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self._driver.get_screenshot_as_file(str(path))
        assert path.stat().st_size > 10_000
        return path


def masked(code: str) -> str:
    return code[:4] + re.sub(r"[^-]", "\u2022", code[4:-4]) + code[-4:]


@pytest.mark.browser
def test_a_json_cancellation_by_number_shows_the_exchange_with_the_api_code_masked(
    browser: Any, server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order()
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", api_code)
    page.type("order-ref", order.order_number)
    page.choose("request-format", "application/json")
    page.choose("accept", "application/json")
    outcome = page.click_and_wait("send", "Cancelled")
    assert outcome == f"Cancelled: order {order.order_number} ({order.order_id})."

    request = page.text("request")
    assert request.startswith(f"POST {BY_NUMBER} HTTP/1.1\n")
    assert f"apiCode: {masked(api_code)}" in request
    assert api_code not in request and api_code[4:-4] not in page.source()
    assert "Content-Type: application/json" in request
    assert f'"orderNumber": "{order.order_number}"' in request

    response = page.text("response")
    assert response.startswith("HTTP/1.1 200 OK\n")
    assert "content-type: application/json; charset=utf-8" in response
    assert "x-ordercancel-environment: sandbox" in response
    assert f'{{\n  "orderId": "{order.order_id}",\n  "orderNumber": "{order.order_number}",\n' in response
    assert '"isCanceled": true' in response
    assert service.find_order(engine, order.order_id).status is ProductionStatus.CANCELLED
    # Nothing optional was chosen: the request is the one without them.
    assert "Idempotency-Key" not in request and "reason" not in request and "note" not in request
    assert "idempotent-replayed" not in response and page.text("replayed") == ""
    page.screenshot("json-cancellation-by-number")


UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
REPLAYED = "Replayed (Idempotent-Replayed: true): the answer of an earlier request with this key"


@pytest.mark.browser
def test_the_same_key_sent_twice_from_the_page_is_answered_as_a_replay_and_the_reason_is_kept(
    browser: Any, server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order()
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", api_code)
    page.type("order-ref", order.order_number)
    page.choose("request-format", "application/json")
    page.choose("accept", "application/json")
    page.choose("reason", "WrongModel")
    page.type("note", "ordered the 40 mm one by mistake")
    page.click("new-key")
    key = page.value("idempotency-key")
    assert UUID4.fullmatch(key), key
    page.click("new-key")
    assert page.value("idempotency-key") != key  # each click, a new key
    key = page.value("idempotency-key")

    assert page.click_and_wait("send", "Cancelled") == f"Cancelled: order {order.order_number} ({order.order_id})."
    request = page.text("request")
    assert f"Idempotency-Key: {key}\n" in request
    assert '"reason": "WrongModel",\n  "note": "ordered the 40 mm one by mistake"' in request
    assert page.text("replayed") == "" and "idempotent-replayed" not in page.text("response")
    stored = service.find_order(engine, order.order_id)
    assert stored.status is ProductionStatus.CANCELLED
    assert stored.cancellation_reason is CancellationReason.WRONG_MODEL
    assert stored.cancellation_note == "ordered the 40 mm one by mistake"
    assert stored.cancelled_by is not None and stored.cancelled_by.kind == "apiKey"
    cancelled_at = stored.cancelled_at

    # The retry: the first answer again (isCanceled true, not 507), marked, and nothing changed.
    replayed = page.click_and_wait_for("send", "replayed", REPLAYED)
    assert replayed.startswith(REPLAYED)
    assert page.text("outcome") == f"Cancelled: order {order.order_number} ({order.order_id})."
    response = page.text("response")
    assert response.startswith("HTTP/1.1 200 OK\n") and "idempotent-replayed: true" in response
    assert service.find_order(engine, order.order_id).cancelled_at == cancelled_at
    page.screenshot("idempotency-key-replayed")

    # The same key with another request is refused, and the marker goes away.
    other = make_order()
    page.type("order-ref", other.order_number)
    outcome = page.click_and_wait("send", "Not cancelled.")
    assert outcome == "Not cancelled. 422: Idempotency-Key has been used with a different request."
    assert page.text("replayed") == ""
    assert service.find_order(engine, other.order_id).status is ProductionStatus.ORDERED

    # An emptied key field sends no header: a plain request, which finds the order cancelled.
    page.type("order-ref", order.order_number)
    page.type("idempotency-key", "")
    page.click_and_wait("send", "Not cancelled. 507")
    assert "Idempotency-Key" not in page.text("request")


@pytest.mark.browser
def test_an_xml_cancellation_by_id_shows_the_pretty_printed_xml_answer(
    browser: Any, server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order(status="Processing")
    page = DemoPage(browser, server.url + BY_ID_PAGE)
    page.type("api-code", api_code)
    page.type("order-ref", order.order_id)
    page.choose("request-format", "text/xml")
    page.choose("accept", "application/xml")
    page.choose("reason", "PriceOrDeliveryTime")
    page.type("note", "<cheaper> & sooner elsewhere")
    page.click_and_wait("send", f"Cancelled: order {order.order_number} ({order.order_id}).")

    request = page.text("request")
    assert request.startswith(f"POST {BY_ID} HTTP/1.1\n")
    assert "Content-Type: text/xml" in request
    assert (
        f"<CancelOrderByIdRequest>\n  <orderId>{order.order_id}</orderId>\n  <reason>PriceOrDeliveryTime</reason>\n"
        "  <note>&lt;cheaper&gt; &amp; sooner elsewhere</note>\n</CancelOrderByIdRequest>"
    ) in request
    response = page.text("response")
    assert "content-type: application/xml; charset=utf-8" in response
    assert f"<CancelOrderResponse>\n  <orderId>{order.order_id}</orderId>\n" in response
    assert "  <isCanceled>true</isCanceled>\n</CancelOrderResponse>" in response
    stored = service.find_order(engine, order.order_id)
    assert stored.status is ProductionStatus.CANCELLED
    assert (stored.cancellation_reason, stored.cancellation_note) == (
        CancellationReason.PRICE_OR_DELIVERY_TIME,
        "<cheaper> & sooner elsewhere",
    )
    page.screenshot("xml-cancellation-by-id")


@pytest.mark.browser
def test_a_refusal_shows_its_code_and_message_and_changes_nothing(
    browser: Any, server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order(status="InProduction")
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", api_code)
    page.type("order-ref", order.order_number)
    page.choose("request-format", "application/json")
    page.choose("accept", "text/xml")
    outcome = page.click_and_wait("send", "Not cancelled.")
    assert outcome == (
        "Not cancelled. 508: Impossible to cancel order. Production has already been started. "
        "Contact us for more details."
    )
    response = page.text("response")
    assert "<isCanceled>false</isCanceled>\n  <requestError>\n    <message>Impossible" in response
    assert "    <code>508</code>\n  </requestError>" in response
    assert service.find_order(engine, order.order_id).status is ProductionStatus.IN_PRODUCTION
    page.screenshot("refusal-508")


@pytest.mark.browser
def test_a_wrong_api_code_is_shown_as_401(browser: Any, server: LiveServer, make_order: OrderFactory) -> None:
    order = make_order()
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", "0f8fad5b-d9cb-469f-a165-70867728950e")
    page.type("order-ref", order.order_number)
    page.choose("accept", "application/json")
    assert page.click_and_wait("send", "Not cancelled.") == "Not cancelled. 401: Unauthorized"
    assert page.text("response").startswith("HTTP/1.1 401 Unauthorized\n")


@pytest.mark.browser
def test_the_sandbox_form_creates_a_test_order_that_then_gives_its_outcome(
    browser: Any, server: LiveServer, api_code: str, engine: Engine
) -> None:
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", api_code)
    page.choose("request-format", "application/json")
    page.choose("accept", "application/json")
    page.choose("test-status", "Processing")
    page.type("test-engineer", "Ada")
    outcome = page.click_and_wait("create-test-order", "Test order")
    number = page.value("order-ref")
    stored = service.find_order(engine, number)
    assert outcome == f"Test order {number} ({stored.order_id}) created: Processing, PaymentOK, held by Ada."
    assert (stored.status, stored.engineer) == (ProductionStatus.PROCESSING, "Ada")
    assert page.text("request").startswith("POST /web-api/sandbox/orders HTTP/1.1\n")

    page.click_and_wait("send", "Not cancelled. 509: Impossible to cancel order. Order processing has already")
    page.screenshot("sandbox-test-order-then-509")


# The sandbox's front page, the favicon, the demo code ------------------------------------------

DEMO_CODE = "5f3c2a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60"


def test_the_sandbox_front_page_points_to_the_demo_pages_and_production_has_none(settings: Settings) -> None:
    with LiveServer(settings) as sandbox:
        index = httpx.get(sandbox.url + "/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert f'href="{BY_NUMBER_PAGE}"' in index.text and f'href="{BY_ID_PAGE}"' in index.text
        assert "default-src 'none'" in index.headers["content-security-policy"]
    with LiveServer(replace(settings, environment=Environment.PRODUCTION)) as production:
        assert httpx.get(production.url + "/").status_code == 404


def test_the_demo_pages_name_a_favicon_that_is_served(http: httpx.Client) -> None:
    page = http.get(BY_NUMBER_PAGE).text
    assert '<link rel="icon" href="favicon.svg"' in page
    icon = http.get("/api/demo/favicon.svg")
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml")
    assert icon.text.startswith("<svg")


def test_the_demo_code_is_offered_only_in_the_sandbox_and_only_when_configured(settings: Settings) -> None:
    with LiveServer(settings) as plain:
        assert 'id="use-demo-code"' not in httpx.get(plain.url + BY_NUMBER_PAGE).text
    with LiveServer(replace(settings, demo_api_code=DEMO_CODE)) as demo:
        page = httpx.get(demo.url + BY_ID_PAGE).text
        assert f'id="use-demo-code" type="button" class="secondary" data-code="{DEMO_CODE}"' in page
    production = replace(settings, environment=Environment.PRODUCTION, demo_api_code=DEMO_CODE)
    with LiveServer(production) as live:
        page = httpx.get(live.url + BY_NUMBER_PAGE).text
        assert "use-demo-code" not in page and DEMO_CODE not in page


def test_the_demo_code_comes_from_the_environment_and_must_be_a_guid() -> None:
    assert Settings.from_env({"ORDERCANCEL_DEMO_API_CODE": DEMO_CODE.upper()}).demo_api_code == DEMO_CODE
    with pytest.raises(ValueError, match="ORDERCANCEL_DEMO_API_CODE: must be an API code"):
        Settings.from_env({"ORDERCANCEL_DEMO_API_CODE": "demo"})


@pytest.mark.browser
def test_an_empty_api_code_is_not_sent_and_the_page_says_what_is_missing(browser: Any, server: LiveServer) -> None:
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("order-ref", "IMC000001")
    outcome = page.click_and_wait("send", "Not sent")
    assert outcome == "Not sent: the API code is missing. Paste yours above."
    assert page.text("request") == "" and page.text("response") == ""


@pytest.mark.browser
def test_the_page_shows_the_sandbox_hint_of_a_refusal(browser: Any, server: LiveServer) -> None:
    page = DemoPage(browser, server.url + BY_NUMBER_PAGE)
    page.type("api-code", "not-a-guid")
    page.type("order-ref", "IMC000001")
    page.choose("accept", "application/json")
    page.click_and_wait("send", "Not cancelled. 401: Unauthorized")
    assert page.text("hint") == "Hint: apiCode is not a GUID"
    assert "x-ordercancel-hint: apiCode is not a GUID" in page.text("response")


def _outside_their_cards(driver: Any) -> list[str]:
    """Name every form control that pokes out of the card (section) that holds it."""
    return list(
        driver.execute_script(
            """
            const out = [];
            for (const control of document.querySelectorAll("section input, section select, section button")) {
              const card = control.closest("section").getBoundingClientRect();
              const box = control.getBoundingClientRect();
              if (box.left < card.left || box.right > card.right) out.push(control.id || control.name);
            }
            if (document.documentElement.scrollWidth > window.innerWidth) out.push("the page scrolls sideways");
            return out;
            """
        )
    )


@pytest.mark.browser
def test_the_page_served_by_make_run_offers_the_demo_code_fits_420_px_and_loads_without_a_404(
    browser: Any, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    if settings.sqlite_path() is None:
        pytest.skip("one real `ordercancel serve` is enough: the SQLite variant")
    code = service.create_key(engine, settings.environment, "demo")
    # `ordercancel serve` itself, as make run starts it: no `server` header, the demo code handed down.
    serve = ServeProcess(settings.database_url, tmp_path / "serve.log", env={"ORDERCANCEL_DEMO_API_CODE": code})
    browser.set_window_size(420, 1400)
    try:
        with serve:
            browser.get_log("browser")  # drop what earlier pages logged
            page = DemoPage(browser, serve.url + "/")
            assert "Order Cancellation by Number API demo" in page.source()
            page = DemoPage(browser, serve.url + BY_NUMBER_PAGE)
            page.click_and_wait("use-demo-code", "The demo API code is filled in")
            assert page.value("api-code") == code
            page.choose("request-format", "application/json")
            page.choose("accept", "application/json")
            page.click_and_wait("create-test-order", "Test order")
            number = page.value("order-ref")
            outcome = page.click_and_wait("send", "Cancelled")
            assert outcome.startswith(f"Cancelled: order {number} (")
            response = page.text("response")
            assert "x-ordercancel-environment: sandbox" in response
            assert "server:" not in response.lower()
            assert _outside_their_cards(browser) == []
            problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
            assert problems == []
            shot = page.screenshot("make-run-page-420px")
        # The documentation's picture is this page at 420 px: retaken on every run, committed when it changes.
        shutil.copy(shot, OUTPUT / "demo-page.png")
    finally:
        browser.set_window_size(1280, 1150)
