"""Request ids made without a system call each keep their shape and stay unique, across processes too."""

from __future__ import annotations

import os
import re

from ordercancel.http.core import RequestIds


def test_a_request_id_is_32_lowercase_hex_characters() -> None:
    ids = RequestIds()

    assert all(re.fullmatch(r"[0-9a-f]{32}", ids()) for _ in range(1000))


def test_request_ids_of_one_process_never_repeat() -> None:
    ids = RequestIds()

    assert len({ids() for _ in range(100_000)}) == 100_000


def test_two_sources_of_ids_share_no_id() -> None:
    first, second = RequestIds(), RequestIds()

    assert not {first() for _ in range(1000)} & {second() for _ in range(1000)}


def test_a_forked_child_draws_ids_of_its_own() -> None:
    ids = RequestIds()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its next ids and leave at once
        os.write(writer, ",".join(ids() for _ in range(100)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        theirs = set(pipe.read().split(","))
    os.waitpid(child, 0)

    mine = {ids() for _ in range(100)}
    assert len(theirs) == 100
    assert not mine & theirs
    assert {i[:16] for i in mine}.isdisjoint({i[:16] for i in theirs})  # a prefix of its own
