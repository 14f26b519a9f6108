"""The rendered-fragment memos of the stored path share one bounded budget."""

from __future__ import annotations

import pytest

from app.services import eligibility


def test_memos_render_misses_once_and_stay_within_one_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eligibility, "_memos", {})
    monkeypatch.setattr(eligibility, "_entries", 0)
    monkeypatch.setattr(eligibility, "_MEMO_ENTRIES", 4)
    rendered: list[int] = []

    def render(code: int) -> bytes:
        rendered.append(code)
        return b"<%d>" % code

    first = eligibility.memo(("a",), render)
    second = eligibility.memo(("b",), render)
    assert eligibility.memo(("a",), render) is first
    assert [first[1], first[1], second[2], second[2]] == [b"<1>", b"<1>", b"<2>", b"<2>"]
    assert rendered == [1, 2]  # a hit renders nothing
    for code in range(10, 20):
        assert second[code] == b"<%d>" % code
        assert len(first) + len(second) <= 4  # one budget across every shape
    assert first[1] == b"<1>"  # emptied, rendered again on demand
