"""The XML request reader: expat with DTDs and entities refused, held against defusedxml.

The service used to read XML bodies through defusedxml's ElementTree; the reader that replaced
it for speed must answer every document the same way: the same value, or the same refusal.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

import pytest
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings
from hypothesis import strategies as st

from ordercancel.codecs import XML
from ordercancel.domain import WrongRequestBody

XSI = "http://www.w3.org/2001/XMLSchema-instance"


class DefusedReference:
    """The reader as it was: defusedxml's ElementTree, DTDs forbidden."""

    @staticmethod
    def _root(body: bytes) -> Element:
        try:
            root: Element = fromstring(body, forbid_dtd=True)
            return root
        except (ParseError, DefusedXmlException, ValueError):
            raise WrongRequestBody() from None

    @staticmethod
    def _value(element: Element) -> str | None:
        if len(element):
            raise WrongRequestBody()
        if element.get(f"{{{XSI}}}nil") in ("true", "1"):
            return None
        return element.text or ""

    def field(self, body: bytes, name: str) -> str | None:
        matches = [child for child in self._root(body) if child.tag.rpartition("}")[2] == name]
        if len(matches) > 1:
            raise WrongRequestBody()
        return self._value(matches[0]) if matches else None

    def fields(self, body: bytes) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for child in self._root(body):
            name = child.tag.rpartition("}")[2]
            if name in found:
                raise WrongRequestBody()
            found[name] = self._value(child)
        return found


REFERENCE = DefusedReference()


def answer(read: object, body: bytes, name: str | None) -> object:
    try:
        return read.fields(body) if name is None else read.field(body, name)  # type: ignore[attr-defined]
    except WrongRequestBody:
        return "501"


def same_answer(body: bytes, name: str | None = "orderNumber") -> object:
    ours, theirs = answer(XML, body, name), answer(REFERENCE, body, name)
    assert ours == theirs, body
    return ours


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<r><orderNumber>IMC975582</orderNumber></r>", "IMC975582"),
        (b'<?xml version="1.0" encoding="utf-8"?><r><orderNumber> IMC1 </orderNumber></r>', " IMC1 "),
        (b'<r xmlns="urn:x"><orderNumber>A&amp;B&#65;</orderNumber></r>', "A&BA"),
        (b"<p:r xmlns:p='urn:p'><p:orderNumber>N</p:orderNumber><other/></p:r>", "N"),
        (b"<r><orderNumber><![CDATA[<x>]]></orderNumber></r>", "<x>"),
        (b"<r><orderNumber>a<!-- c -->b<?pi x?>c</orderNumber></r>", "abc"),
        (b"<r><orderNumber/></r>", ""),
        (f'<r xmlns:i="{XSI}"><orderNumber i:nil="true">x</orderNumber></r>'.encode(), None),
        (b'<r><orderNumber nil="true">x</orderNumber></r>', "x"),
        (b"<r><OrderNumber>N</OrderNumber></r>", None),
        (b"<r/>", None),
        (b"<r><orderNumber>1</orderNumber><orderNumber>2</orderNumber></r>", "501"),
        (b"<r><orderNumber><b>1</b></orderNumber></r>", "501"),
        (b"<r><x><orderNumber>1</orderNumber></x></r>", None),
        (b"<r><orderNumber>1</orderNumber></r><r/>", "501"),
        (b"<r><orderNumber>1</orderNumber>", "501"),
        (b"", "501"),
        (b"<r><orderNumber>&undefined;</orderNumber></r>", "501"),
        (b'<!DOCTYPE r [<!ENTITY e "boom">]><r><orderNumber>&e;</orderNumber></r>', "501"),
        (b'<!DOCTYPE r SYSTEM "http://example.com/r.dtd"><r><orderNumber>1</orderNumber></r>', "501"),
        (b"<!DOCTYPE r><r><orderNumber>1</orderNumber></r>", "501"),
        (b"<r><orderNumber>\xff</orderNumber></r>", "501"),
        ('<?xml version="1.0" encoding="windows-1252"?><r><orderNumber>\u20ac</orderNumber></r>'.encode("cp1252"), "€"),
        ('<?xml version="1.0" encoding="utf-16"?><r><orderNumber>N</orderNumber></r>'.encode("utf-16"), "N"),
    ],
)
def test_the_reader_answers_as_defusedxml_did(body: bytes, expected: object) -> None:
    assert same_answer(body) == expected


def test_a_billion_laughs_is_refused_before_anything_is_expanded() -> None:
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    body = f'<!DOCTYPE r [<!ENTITY l0 "ha">{entities}]><r><orderNumber>&l9;</orderNumber></r>'.encode()

    with pytest.raises(WrongRequestBody):
        XML.field(body, "orderNumber")


NAMES = st.sampled_from(["orderNumber", "orderId", "OrderNumber", "x"])
PREFIXES = st.sampled_from(["", "p:", "q:"])
TEXTS = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8).map(
        lambda t: t.replace("&", "&amp;").replace("<", "&lt;")
    ),
    st.sampled_from(["&amp;", "&#x41;", "&nope;", "<![CDATA[<]]>", "<!--c-->", "<b/>", "<b>t</b>", "<", "&"]),
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    children = []
    for _ in range(draw(st.integers(0, 3))):
        prefix, name = draw(PREFIXES), draw(NAMES)
        nil = draw(st.sampled_from(["", ' i:nil="true"', ' i:nil="1"', ' i:nil="false"', ' nil="true"']))
        content = "".join(draw(st.lists(TEXTS, max_size=3)))
        children.append(f"<{prefix}{name}{nil}>{content}</{prefix}{name}>")
    spaces = ' xmlns:p="urn:p" xmlns:q="urn:q" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"'
    head = draw(
        st.sampled_from(["", '<?xml version="1.0"?>', "<!DOCTYPE r>", '<?xml version="1.0" encoding="latin-1"?>'])
    )
    tail = draw(st.sampled_from(["", " ", "<r/>", "junk"]))
    text = f"{head}<r{spaces}>{''.join(children)}</r>{tail}"
    return text.encode("latin-1", "replace") if "latin-1" in head else text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None)
@given(documents(), st.one_of(st.none(), NAMES))
def test_any_document_gets_the_same_answer_as_from_defusedxml(body: bytes, name: str | None) -> None:
    same_answer(body, name)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_in_an_xml_answer_is_escaped_as_before_and_reads_back(value: str) -> None:
    from xml.sax.saxutils import escape

    from ordercancel.codecs import _NOT_XML, _text

    assert _text(value) == escape(_NOT_XML.sub("\ufffd", value))
    body = XML.encode({"orderNumber": value, "isCanceled": False})
    expected = _NOT_XML.sub("\ufffd", value).replace("\r\n", "\n").replace("\r", "\n")
    assert XML.field(body, "orderNumber") == expected
