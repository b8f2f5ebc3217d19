"""Our webhook signatures are the Standard Webhooks ones: checked against its published vector and its library."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ordercancel.client import InvalidSignature, verify_webhook
from ordercancel.client.webhooks import sign
from ordercancel.events import new_secret

# The specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_we_sign_the_published_test_vector_as_the_specification_does() -> None:
    assert sign([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_our_verifier_accepts_the_published_test_vector_at_its_own_time() -> None:
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    assert verify_webhook(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 10) == {"test": 2432232314}


def test_our_verifier_refuses_the_vector_five_minutes_and_a_second_later_or_earlier() -> None:
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    verify_webhook(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP + 300)
    for now in (VECTOR_TIMESTAMP + 301, VECTOR_TIMESTAMP - 301):
        with pytest.raises(InvalidSignature, match="too far"):
            verify_webhook(VECTOR_BODY, headers, VECTOR_SECRET, now=now)


def test_the_standard_webhooks_library_and_ours_verify_each_others_signatures() -> None:
    secret = new_secret()
    now = int(time.time())
    body = b'{"type":"order.cancelled","data":{"orderNumber":"IMC000001"}}'
    ours = sign([secret], "evt_1", now, body)
    assert Webhook(secret).verify(body, _headers("evt_1", now, ours)) == {
        "type": "order.cancelled",
        "data": {"orderNumber": "IMC000001"},
    }
    theirs = Webhook(secret).sign("evt_2", _at(now), body.decode())
    assert verify_webhook(body, _headers("evt_2", now, theirs), secret)["type"] == "order.cancelled"


def _at(timestamp: int) -> object:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def test_a_new_secret_is_whsec_and_the_base64_of_at_least_24_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24


def test_during_a_rotation_either_secret_verifies_the_two_signature_header() -> None:
    old, new = new_secret(), new_secret()
    now = int(time.time())
    body = b'{"type":"order.claimed"}'
    header = sign([new, old], "evt_3", now, body)
    assert len(header.split(" ")) == 2 and all(part.startswith("v1,") for part in header.split(" "))
    for secret in (old, new):
        assert verify_webhook(body, _headers("evt_3", now, header), secret)["type"] == "order.claimed"
        Webhook(secret).verify(body, _headers("evt_3", now, header))
    assert verify_webhook(body, _headers("evt_3", now, header), [new_secret(), old])["type"] == "order.claimed"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: (h | {"webhook-signature": "v1,AAAA"}, b), id="wrong signature"),
        pytest.param(lambda h, b: (h, b + b" "), id="body changed"),
        pytest.param(lambda h, b: (h | {"webhook-id": "evt_other"}, b), id="id changed"),
        pytest.param(lambda h, b: (h | {"webhook-timestamp": str(int(h["webhook-timestamp"]) - 1)}, b), id="time"),
        pytest.param(lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), id="unsigned"),
        pytest.param(lambda h, b: (h | {"webhook-timestamp": "soon"}, b), id="timestamp not a number"),
    ],
)
def test_a_tampered_delivery_is_refused_by_our_verifier_and_by_the_library(tamper: object) -> None:
    secret = new_secret()
    now = int(time.time())
    body = b'{"type":"order.released"}'
    headers, sent = tamper(_headers("evt_4", now, sign([secret], "evt_4", now, body)), body)  # type: ignore[operator]
    with pytest.raises(InvalidSignature):
        verify_webhook(sent, headers, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(sent, headers)


def test_the_verifier_reads_header_names_in_any_case_and_a_secret_without_its_prefix() -> None:
    secret = new_secret()
    now = int(time.time())
    body = b"{}"
    headers = {k.upper(): v for k, v in _headers("evt_5", now, sign([secret], "evt_5", now, body)).items()}
    assert verify_webhook(body, headers, secret.removeprefix("whsec_")) == {}


def test_the_default_retry_schedule_is_the_issues_and_the_setting_reads_the_same_form() -> None:
    from ordercancel.config import Settings
    from ordercancel.events import DEFAULT_SCHEDULE

    assert DEFAULT_SCHEDULE == (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
    assert Settings().webhook_schedule == DEFAULT_SCHEDULE
    parsed = Settings.from_env({"ORDERCANCEL_WEBHOOK_SCHEDULE": "5s,5m,30m,2h,5h,10h,10h"}).webhook_schedule
    assert parsed == DEFAULT_SCHEDULE
    assert Settings.from_env({"ORDERCANCEL_WEBHOOK_SCHEDULE": "1,2.5"}).webhook_schedule == (1, 2.5)
    for bad in ("", "soon", "5s,,-1", "0"):
        with pytest.raises(ValueError, match="ORDERCANCEL_WEBHOOK_SCHEDULE"):
            Settings.from_env({"ORDERCANCEL_WEBHOOK_SCHEDULE": bad})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_addresses_inside_the_platform_are_forbidden_however_they_are_written(address: str) -> None:
    from ordercancel.events import forbidden_address

    assert forbidden_address(address)


def test_public_addresses_are_allowed() -> None:
    from ordercancel.events import forbidden_address

    assert not any(
        forbidden_address(a) for a in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::1")
    )
