"""Input lines: cutting a byte stream into numbered lines, and what each line means."""

from __future__ import annotations

import pytest

from app.services.bulk import MAX_LINE, LineSplitter, parse_line

NIK = "3201014501900001"


def split(data: bytes, size: int, max_line: int = MAX_LINE) -> list[tuple[int, bytes | None]]:
    splitter = LineSplitter(max_line)
    out = []
    for start in range(0, len(data), size):
        out += splitter.feed(data[start : start + size])
    return out + splitter.end()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 17, 1000])
def test_lines_survive_any_cut(size: int) -> None:
    data = b'{"nik": "1"}\n\n22\r\n333'
    assert split(data, size) == [(1, b'{"nik": "1"}'), (2, b""), (3, b"22\r"), (4, b"333")]


def test_a_trailing_newline_adds_no_line() -> None:
    assert split(b"a\nb\n", 3) == [(1, b"a"), (2, b"b")]
    assert split(b"", 3) == []


@pytest.mark.parametrize("size", [1, 5, 64])
def test_an_overlong_line_is_reported_and_not_buffered(size: int) -> None:
    data = b"ok\n" + b"x" * 100 + b"\nfine\n" + b"y" * 50
    splitter = LineSplitter(20)
    out = []
    for start in range(0, len(data), size):
        out += splitter.feed(data[start : start + size])
        assert len(splitter._tail) <= 20  # memory stays bounded whatever the line
    out += splitter.end()
    assert out == [(1, b"ok"), (2, None), (3, b"fine"), (4, None)]


@pytest.mark.parametrize(
    ("raw", "nik"),
    [
        (b'{"nik": "3201014501900001"}', NIK),
        (b'  {"nik":"3201014501900001","ref":"x"}\r', NIK),
        (b"3201014501900001", NIK),
        (b' "3201014501900001" ', NIK),
    ],
)
def test_accepted_lines(raw: bytes, nik: str) -> None:
    item = parse_line(7, raw)
    assert item is not None
    assert (item.line, item.nik, item.error) == (7, nik, None)


@pytest.mark.parametrize(
    ("raw", "code", "echo"),
    [
        (b'{"nik": "3201014501900001"', "malformed_json", None),
        (b"[1, 2]", "malformed_json", None),
        (b'{"id": "3201014501900001"}', "nik_missing", None),
        (b'{"nik": 3201014501900001}', "nik_format", None),
        (b'{"nik": "320101450190001"}', "nik_format", "3201*******0001"),
        (b"32010145019000011", "nik_format", "3201*********0011"),
        (b"3201014501900000", "nik_serial", "3201********0000"),
        (b"3201013213900001", "nik_date", "3201********0001"),
        (b"3201 014501900001", "nik_format", "3201*********0001"),
        (b"x" * 40, "nik_format", None),
        (None, "line_too_long", None),
    ],
)
def test_rejected_lines_name_the_problem_and_mask_the_value(
    raw: bytes | None, code: str, echo: str | None
) -> None:
    item = parse_line(3, raw)
    assert item is not None
    assert item.nik is None
    assert item.error is not None
    assert item.error["code"] == code
    assert item.error.get("nik") == echo
    assert NIK not in str(item.error)


def test_blank_lines_are_none() -> None:
    assert parse_line(1, b"") is None
    assert parse_line(1, b" \t\r") is None


_SHAPES = [
    b'{"nik": "%s"}', b'{"nik":"%s"}', b"%s", b'"%s"', b' {"nik": "%s"} ', b'{"nik": "%s"}\r',
    b'{"nik": "%s", "x": 1}', b'{"nak": "%s"}', b'{"nik": "%s"', b'{"nik": %s}', b"[%s]",
]  # fmt: skip
_VALUES = [
    NIK, "3201019999900001", "3201014501900000", "320101450190000a", "32010145019000011",
    "320101450190000", "٣٢٠١٠١٤٥٠١٩٠٠٠٠١", "3201012902000001", "3201012901000001", "",
]  # fmt: skip


def test_the_block_parser_answers_every_line_as_parse_line() -> None:
    """parse_lines recognises the usual lines without a call each: the same Items, errors and
    blanks as parse_line, for the usual shapes and their near misses."""
    from app.services.bulk import parse_lines

    lines: list[tuple[int, bytes | None]] = [(1, None), (2, b""), (3, b"   ")]
    for shape in _SHAPES:
        for value in _VALUES:
            lines.append((len(lines) + 1, shape % value.encode()))
    expected = [parse_line(number, raw) for number, raw in lines]
    assert parse_lines(lines) == expected
    assert sum(1 for item in expected if item is not None and item.nik is not None) >= 6
