"""`convert.timestamp` against protobuf's own `Timestamp.FromDatetime`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from trainingfiles_server.convert import timestamp

_OFFSETS = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    _OFFSETS,
)
def test_timestamp_is_what_from_datetime_makes(moment: datetime, zone: timezone | None) -> None:
    """Aware in any offset, or naive (read as UTC), before and after 1970."""
    moment = moment.replace(tzinfo=zone)
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    assert timestamp(moment) == expected
