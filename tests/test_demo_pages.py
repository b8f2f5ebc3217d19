"""The demo pages: served as they are, then used end to end in Debian's headless Chromium."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from ordercancel.config import Environment, Settings
from ordercancel.domain import ProductionStatus
from ordercancel.storage import service
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
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
    page.screenshot("json-cancellation-by-number")


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
    page.click_and_wait("send", f"Cancelled: order {order.order_number} ({order.order_id}).")

    request = page.text("request")
    assert request.startswith(f"POST {BY_ID} HTTP/1.1\n")
    assert "Content-Type: text/xml" in request
    assert f"<CancelOrderByIdRequest>\n  <orderId>{order.order_id}</orderId>\n</CancelOrderByIdRequest>" in request
    response = page.text("response")
    assert "content-type: application/xml; charset=utf-8" in response
    assert f"<CancelOrderResponse>\n  <orderId>{order.order_id}</orderId>\n" in response
    assert "  <isCanceled>true</isCanceled>\n</CancelOrderResponse>" in response
    assert service.find_order(engine, order.order_id).status is ProductionStatus.CANCELLED
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
