"""Wire formats: JSON and XML bodies in and out, and the choice between them.

Codecs are values in a registry keyed by media type; `negotiate` picks the response codec
from an Accept header and `request_codec` the request codec from a Content-Type header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from xml.parsers import expat
from xml.sax.saxutils import escape

import orjson

from ordercancel.domain import Outcome, RequestError, WrongRequestBody

#: The response root element of every XML answer.
XML_ROOT = "CancelOrderResponse"
#: Marker for a field that is absent or null: both mean "not sent".
ABSENT = None


class Codec(Protocol):
    def field(self, body: bytes, name: str) -> str | None:
        """Return the named string field of a request body, None if absent or null.

        Raise WrongRequestBody when the body cannot be parsed or the field is not a string.
        """
        ...

    def fields(self, body: bytes) -> dict[str, str | None]:
        """Return every scalar top-level field of a request body (strings, or None for null)."""
        ...

    def encode(self, fields: Mapping[str, object]) -> bytes:
        """Render an ordered mapping of fields (values str, bool, int, None or nested mapping)."""
        ...


class JsonCodec:
    def _object(self, body: bytes) -> dict[str, object]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WrongRequestBody() from None
        if not isinstance(document, dict):
            raise WrongRequestBody()
        return document

    def field(self, body: bytes, name: str) -> str | None:
        value = self._object(body).get(name)
        if value is None or isinstance(value, str):
            return value
        raise WrongRequestBody()

    def fields(self, body: bytes) -> dict[str, str | None]:
        document = self._object(body)
        if any(v is not None and not isinstance(v, str) for v in document.values()):
            raise WrongRequestBody()
        return {k: v for k, v in document.items() if isinstance(v, str) or v is None}

    def encode(self, fields: Mapping[str, object]) -> bytes:
        return orjson.dumps(fields)


_XSI_NIL = "http://www.w3.org/2001/XMLSchema-instance}nil"  # as expat names it with "}" between
# Characters XML 1.0 cannot carry at all, not even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class _Forbidden(Exception):
    """The document declares a DTD or an entity: never expanded, never fetched."""


def _forbid(*_: object) -> int:
    raise _Forbidden()


@dataclass(slots=True)
class _Child:
    """One child element of the request's root: its local name, its text, and what else it held."""

    name: str
    nil: bool
    text: list[str]
    nested: bool = False

    def value(self) -> str | None:
        if self.nested:
            raise WrongRequestBody()
        return ABSENT if self.nil else "".join(self.text)


def _children(body: bytes) -> list[_Child]:
    """Read the root's child elements with expat itself, refusing any DTD or entity declaration.

    The same guards as defusedxml (which this replaced) on the same parser, without building a
    tree through Python classes: an XML request costs ~3 us to read instead of ~6.
    """
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid
    children: list[_Child] = []
    depth = 0

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 2:
            children.append(_Child(_local(tag), attributes.get(_XSI_NIL) in ("true", "1"), []))
        elif depth == 3:
            children[-1].nested = True

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        if depth == 2:
            children[-1].text.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _Forbidden, ValueError):
        raise WrongRequestBody() from None
    return children


class XmlCodec:
    def field(self, body: bytes, name: str) -> str | None:
        matches = [child for child in _children(body) if child.name == name]
        if len(matches) > 1:
            raise WrongRequestBody()
        return matches[0].value() if matches else ABSENT

    def fields(self, body: bytes) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for child in _children(body):
            if child.name in found:
                raise WrongRequestBody()
            found[child.name] = child.value()
        return found

    def encode(self, fields: Mapping[str, object]) -> bytes:
        return f'<?xml version="1.0" encoding="utf-8"?>{_element(XML_ROOT, fields)}'.encode()


def _element(name: str, value: object) -> str:
    if isinstance(value, Mapping):
        inner = "".join([_element(k, v) for k, v in value.items() if v is not None])
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = _text(str(value))
    return f"<{name}>{inner}</{name}>"


def _text(value: str) -> str:
    """Escape text for XML, replacing what XML 1.0 cannot carry at all."""
    # Printable ASCII (IDs, order numbers, the messages) needs no replacing: skip the regex.
    if not (value.isascii() and value.isprintable()):
        value = _NOT_XML.sub("\ufffd", value)
    if "&" in value or "<" in value or ">" in value:
        value = escape(value)
    return value


JSON = JsonCodec()
XML = XmlCodec()

#: Every media type we speak, with its codec.
CODECS: dict[str, Codec] = {
    "application/json": JSON,
    "text/json": JSON,
    "text/xml": XML,
    "application/xml": XML,
}
DEFAULT_MEDIA_TYPE = "text/xml"
_WILDCARDS = {"*/*": DEFAULT_MEDIA_TYPE, "text/*": "text/xml", "application/*": "application/xml"}


@dataclass(frozen=True, slots=True)
class Negotiated:
    media_type: str
    codec: Codec

    @property
    def content_type(self) -> bytes:
        return f"{self.media_type}; charset=utf-8".encode()


_NEGOTIATED = {media_type: Negotiated(media_type, codec) for media_type, codec in CODECS.items()}
DEFAULT = _NEGOTIATED[DEFAULT_MEDIA_TYPE]


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def negotiate(accept: str | None) -> Negotiated:
    """Pick the response format for an Accept header: highest q wins, earliest on a tie."""
    if not accept:
        return DEFAULT
    best: Negotiated | None = None
    best_q = 0.0
    for item in accept.split(",")[:32]:
        media_type, *params = item.split(";")
        media_type = media_type.strip().lower()
        media_type = _WILDCARDS.get(media_type, media_type)
        chosen = _NEGOTIATED.get(media_type)
        if chosen is None:
            continue
        q = _quality(params)
        if q > best_q:
            best, best_q = chosen, q
    return best or DEFAULT


def request_codec(content_type: str | None, body: bytes) -> Codec:
    """Pick the codec that reads a request body; raise WrongRequestBody for any other type."""
    if content_type is None or not content_type.strip():
        first = body.lstrip()[:1]
        if first == b"{":
            return JSON
        if first == b"<":
            return XML
        raise WrongRequestBody()
    codec = CODECS.get(content_type.split(";", 1)[0].strip().lower())
    if codec is None:
        raise WrongRequestBody()
    return codec


def outcome_fields(outcome: Outcome) -> dict[str, object]:
    """Return the response fields of an outcome in their documented order."""
    fields: dict[str, object] = {}
    if outcome.order_id is not None:
        fields["orderId"] = outcome.order_id
    if outcome.order_number is not None:
        fields["orderNumber"] = outcome.order_number
    fields["isCanceled"] = outcome.error is None
    if outcome.error is not None:
        fields["requestError"] = error_fields(outcome.error)
    return fields


def error_fields(error: RequestError) -> dict[str, object]:
    return {"message": error.message, "code": error.code}
