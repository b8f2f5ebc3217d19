"""Properties of the wire formats and of negotiation, over inputs hypothesis makes up."""

from __future__ import annotations

import os
from xml.etree.ElementTree import fromstring
from xml.sax.saxutils import escape

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordercancel import domain
from ordercancel.codecs import (
    _CHOSEN,
    _CHOSEN_MOST,
    _NOT_XML,
    CODECS,
    DEFAULT,
    JSON,
    XML,
    negotiate,
    outcome_fields,
    request_codec,
)
from ordercancel.domain import Outcome, RequestError, WrongOrderNumber, WrongRequestBody

FIELD = "orderNumber"
#: Examples per property: a few hundred in `make test`, thousands in `make fuzz`.
EXAMPLES = int(os.environ.get("ORDERCANCEL_PROPERTY_EXAMPLES", "200"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)
#: Characters XML 1.0 can carry; carriage returns are normalised to line feeds by every parser.
XML_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r").filter(
        lambda c: c in "\t\n" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c >= "\U00010000"
    )
)
#: Bytes that look like the bodies people (and attackers) send: near-misses of JSON and XML.
NEAR_MISSES = st.one_of(
    st.binary(max_size=512),
    st.text(alphabet='{}[]":,<>/=!?&;% \\u0aDOCTYPEENTITYorderNumber\x00\xff', max_size=256).map(str.encode),
    st.builds(lambda s: b'{"orderNumber": ' + s + b"}", st.binary(max_size=64)),
    st.builds(lambda s: b"<r><orderNumber>" + s + b"</orderNumber></r>", st.binary(max_size=64)),
)


@PROPERTY
@given(st.text())
def test_any_json_string_value_is_read_back_unchanged(value: str) -> None:
    assert JSON.field(orjson.dumps({FIELD: value, "other": [1, {"x": None}]}), FIELD) == value


@PROPERTY
@given(XML_TEXT, st.sampled_from(["", 'xmlns="urn:x"', 'xmlns:p="urn:p"']))
def test_any_xml_text_value_is_read_back_unchanged(value: str, namespace: str) -> None:
    body = f"<CancelOrderByNumberRequest {namespace}><{FIELD}>{escape(value)}</{FIELD}></CancelOrderByNumberRequest>"
    assert XML.field(body.encode(), FIELD) == value


@PROPERTY
@given(NEAR_MISSES, st.sampled_from(sorted(set(CODECS.values()), key=repr)))
def test_any_body_either_yields_a_field_or_is_wrong_request_body(body: bytes, codec: object) -> None:
    try:
        value = codec.field(body, FIELD)  # type: ignore[attr-defined]
    except WrongRequestBody:
        return
    assert value is None or isinstance(value, str)


@PROPERTY
@given(st.one_of(st.none(), st.text(max_size=80)), NEAR_MISSES)
def test_any_content_type_picks_a_codec_or_is_wrong_request_body(content_type: str | None, body: bytes) -> None:
    try:
        codec = request_codec(content_type, body)
    except WrongRequestBody:
        return
    assert codec in CODECS.values()


@PROPERTY
@given(st.text(max_size=200))
def test_any_echoed_value_renders_a_well_formed_answer_in_both_formats(echo: str) -> None:
    fields = outcome_fields(Outcome(None, echo, WrongOrderNumber()))
    assert orjson.loads(JSON.encode(fields))["orderNumber"] == echo
    root = fromstring(XML.encode(fields))
    # What XML cannot carry becomes U+FFFD; line ends are normalised by every XML parser.
    expected = _NOT_XML.sub("\ufffd", echo).replace("\r\n", "\n").replace("\r", "\n")
    assert (root.findtext(FIELD) or "") == expected
    assert root.findtext("requestError/code") == "505"
    assert root.findtext("isCanceled") == "false"


MEDIA = st.sampled_from(
    [*CODECS, "TEXT/XML", "Application/Json", "*/*", "text/*", "application/*", "text/html", "image/png", "", "json"]
)
Q = st.sampled_from([None, "1", "1.0", "0.9", "0.5", "0.001", "0", "2", "-1", "abc", ""])


def _expected(items: list[tuple[str, str | None]]) -> str:
    """Negotiation restated: the named type with the highest q wins, the earliest on a tie."""
    wildcards = {"*/*": "text/xml", "text/*": "text/xml", "application/*": "application/xml"}
    best, best_q = DEFAULT.media_type, 0.0
    for named, q_text in items[:32]:
        media = wildcards.get(named.lower(), named.lower())
        if media not in CODECS:
            continue
        try:
            q = 1.0 if q_text is None else float(q_text)
        except ValueError:
            q = 0.0
        q = q if 0.0 <= q <= 1.0 else 0.0
        if q > best_q:
            best, best_q = media, q
    return best


@PROPERTY
@given(st.lists(st.tuples(MEDIA, Q), max_size=6), st.sampled_from([",", ", ", " ,"]))
def test_negotiation_picks_the_highest_quality_type_the_client_named(
    items: list[tuple[str, str | None]], separator: str
) -> None:
    header = separator.join(media if q is None else f"{media};q={q}" for media, q in items)
    chosen = negotiate(header)
    assert chosen.media_type == _expected(items)
    assert chosen.content_type == f"{chosen.media_type}; charset=utf-8".encode()


@PROPERTY
@given(st.text(max_size=500))
def test_negotiation_never_fails_on_any_header(header: str) -> None:
    assert negotiate(header).media_type in CODECS


@PROPERTY
@given(st.lists(st.tuples(MEDIA, Q), max_size=6))
def test_a_remembered_negotiation_answers_what_parsing_the_header_answers(items: list[tuple[str, str | None]]) -> None:
    header = ",".join(media if q is None else f"{media};q={q}" for media, q in items)
    first, again = negotiate(header), negotiate(header)
    assert first.media_type == again.media_type == _expected(items)


def test_negotiation_remembers_a_bounded_number_of_accept_headers() -> None:
    for i in range(_CHOSEN_MOST * 4):
        assert negotiate(f"application/json;q=0.5, text/plain;v={i}").media_type == "application/json"
    assert 0 < len(_CHOSEN) <= _CHOSEN_MOST
    assert negotiate("x" * 10_000 + ",text/json").media_type == "text/json"
    assert not any(len(header) > 1000 for header in _CHOSEN)


@pytest.mark.parametrize("error", [e for e in RequestError.__subclasses__() if e.__module__ == domain.__name__])
def test_every_refusal_renders_in_both_formats(error: type[RequestError]) -> None:
    fields = outcome_fields(Outcome(None, None, error()))
    assert orjson.loads(JSON.encode(fields))["requestError"] == {"message": error.message, "code": error.code}
    assert fromstring(XML.encode(fields)).findtext("requestError/code") == str(error.code)
