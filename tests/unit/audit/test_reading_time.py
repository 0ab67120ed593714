"""``reading.parse_time_bound``: a reader's RFC 3339 time as a bound in the stored time format, or a refusal."""

from __future__ import annotations

import pytest

from bastion.audit.reading import parse_time_bound


@pytest.mark.parametrize(
    ("given", "bound"),
    [
        ("2026-07-01T12:00:00Z", "2026-07-01T12:00:00.000Z"),
        ("2026-07-01T12:00:00.5Z", "2026-07-01T12:00:00.500Z"),
        ("2026-07-01t12:00:00z", "2026-07-01T12:00:00.000Z"),
        ("2026-07-01T14:00:05+02:00", "2026-07-01T12:00:05.000Z"),
        ("2026-07-01T00:30:00-01:00", "2026-07-01T01:30:00.000Z"),
        ("2026-07-01T23:59:59.999+00:00", "2026-07-01T23:59:59.999Z"),
    ],
    ids=["z", "fraction", "lower-case", "plus-offset", "minus-offset", "milliseconds-kept"],
)
def test_a_time_with_an_offset_becomes_the_stored_utc_millisecond_format(given: str, bound: str) -> None:
    assert parse_time_bound(given) == bound


@pytest.mark.parametrize(
    ("given", "bound"),
    [
        ("2026-07-01T12:00:00.0001Z", "2026-07-01T12:00:00.001Z"),
        ("2026-07-01T12:00:00.999001Z", "2026-07-01T12:00:01.000Z"),
        ("2026-07-01T23:59:59.9995Z", "2026-07-02T00:00:00.000Z"),
    ],
    ids=["just-past", "carries-into-seconds", "carries-into-the-next-day"],
)
def test_a_fraction_finer_than_a_millisecond_rounds_up_so_the_comparisons_keep_their_meaning(
    given: str, bound: str
) -> None:
    # A record stamped 12:00:00.000 is before 12:00:00.0001: "time >= bound" must leave it out.
    assert parse_time_bound(given) == bound


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("yesterday", "not an RFC 3339 date-time"),
        ("garbage", "not an RFC 3339 date-time"),
        ("", "not an RFC 3339 date-time"),
        ("2026-13-01T00:00:00Z", "not an RFC 3339 date-time"),
        ("2026-07-01T12:00:00", "has no UTC offset"),
        ("2026-07-01", "has no UTC offset"),
        ("9999-12-31T23:59:59-01:00", "out of range"),
        ("9999-12-31T23:59:59.9999Z", "out of range"),
    ],
    ids=["word", "garbage", "empty", "month-13", "no-offset", "date-only", "past-9999-in-utc", "rounds-past-9999"],
)
def test_anything_else_is_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_time_bound(given)


def test_a_time_without_offset_is_taken_as_utc_when_the_caller_says_so() -> None:
    assert parse_time_bound("2026-07-01T12:00", naive_is_utc=True) == "2026-07-01T12:00:00.000Z"
