"""Epoch generation: calendar alignment, the cross product, deterministic ids (leibrix.domain._epochs)."""

from __future__ import annotations

import calendar
import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from leibrix.domain import _epochs
from leibrix.domain._epochs import Granularity, Unit


def ms(y: int, mo: int, d: int, h: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, 0, 0)) * 1000


def test_days_are_midnight_aligned_and_cover_the_filter():
    g = Granularity(1, Unit.DAY)
    eps = _epochs.generate(ms(2026, 11, 1, 5), ms(2026, 11, 3, 1), g, [])
    assert [(e.start_ms, e.end_ms) for e in eps] == [
        (ms(2026, 11, 1), ms(2026, 11, 2)),
        (ms(2026, 11, 2), ms(2026, 11, 3)),
        (ms(2026, 11, 3), ms(2026, 11, 4)),
    ]
    assert [e.partition_value for e in eps] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_end_is_exclusive():
    g = Granularity(1, Unit.DAY)
    assert _epochs.count_windows(ms(2026, 11, 1), ms(2026, 11, 3), g) == 2
    assert len(_epochs.generate(ms(2026, 11, 1), ms(2026, 11, 3), g, [])) == 2


def test_weeks_start_on_monday():
    g = Granularity(1, Unit.WEEK)
    # 2026-11-27 is a Friday; its ISO week starts Monday 2026-11-23.
    (e,) = _epochs.generate(ms(2026, 11, 27), ms(2026, 11, 27, 1), g, [])
    assert (e.start_ms, e.end_ms) == (ms(2026, 11, 23), ms(2026, 11, 30))
    assert e.partition_value == "2026-W48"


def test_months_have_calendar_lengths_and_quarters_align():
    g = Granularity(1, Unit.MONTH)
    eps = _epochs.generate(ms(2024, 1, 15), ms(2024, 3, 2), g, [])
    assert [(e.start_ms, e.end_ms) for e in eps] == [
        (ms(2024, 1, 1), ms(2024, 2, 1)),
        (ms(2024, 2, 1), ms(2024, 3, 1)),  # leap February: 29 days
        (ms(2024, 3, 1), ms(2024, 4, 1)),
    ]
    q = Granularity(3, Unit.MONTH)
    (e,) = _epochs.generate(ms(2024, 5, 5), ms(2024, 5, 6), q, [])
    assert (e.start_ms, e.end_ms, e.partition_value) == (ms(2024, 4, 1), ms(2024, 7, 1), "2024-04")


def test_multi_hour_windows_are_anchored_at_the_unix_epoch():
    g = Granularity(6, Unit.HOUR)
    (e,) = _epochs.generate(ms(2026, 11, 27, 7), ms(2026, 11, 27, 8), g, [])
    assert (e.start_ms, e.end_ms) == (ms(2026, 11, 27, 6), ms(2026, 11, 27, 12))
    assert e.partition_value == "2026-11-27T06"


def test_cross_product_of_dimensions():
    g = Granularity(1, Unit.DAY)
    dims = [("region", ["eu", "us"]), ("app", ["a", "b", "c"])]
    eps = _epochs.generate(ms(2026, 1, 1), ms(2026, 1, 3), g, dims)
    assert len(eps) == 2 * 2 * 3 == _epochs.count_epochs(ms(2026, 1, 1), ms(2026, 1, 3), g, dims)
    combos = {e.dims for e in eps}
    assert len(combos) == 6
    assert all(e.dims[0][0] == "app" and e.dims[1][0] == "region" for e in eps)  # sorted keys
    assert len({e.epoch_id for e in eps}) == len(eps)


def test_id_format_and_exact_hashed_string():
    start, end = ms(2026, 11, 27), ms(2026, 11, 28)
    dims = (("app", "x|y"), ("region", "eu"))
    text = f"acme%2Forders|{start}|{end}|v%2F1|app=x%7Cy&region=eu"
    assert _epochs.canonical(start, end, "v/1", dims, scope="acme/orders") == text
    expected = f"{start}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    assert _epochs.epoch_id(start, end, "v/1", dims, scope="acme/orders") == expected
    (e,) = _epochs.generate(start, end, Granularity(1, Unit.DAY), [("region", ["eu"]), ("app", ["x|y"])],
                            version="v/1", scope="acme/orders")
    assert e.epoch_id == expected
    (other,) = _epochs.generate(start, end, Granularity(1, Unit.DAY), [("region", ["eu"]), ("app", ["x|y"])],
                                version="v/1", scope="globex/orders")
    assert other.epoch_id != expected


def test_version_changes_ids_so_a_refresh_loads_beside():
    g = Granularity(1, Unit.DAY)
    a = _epochs.generate(ms(2026, 1, 1), ms(2026, 1, 2), g, [], version="1")
    b = _epochs.generate(ms(2026, 1, 1), ms(2026, 1, 2), g, [], version="2")
    assert a[0].epoch_id != b[0].epoch_id
    assert a[0].epoch_id.split("_")[0] == b[0].epoch_id.split("_")[0]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30, unique=True), seed=st.integers())
def test_ids_do_not_depend_on_value_order(values, seed):
    g = Granularity(1, Unit.HOUR)
    a = _epochs.generate(0, 2 * 3_600_000, g, [("k", values), ("z", ["1", "2"])])
    shuffled = list(values)
    random.Random(seed).shuffle(shuffled)
    b = _epochs.generate(0, 2 * 3_600_000, g, [("z", ["2", "1"]), ("k", shuffled)])
    assert a == b
    assert len({e.epoch_id for e in a}) == len(a)


def test_collisions_inside_one_admission_are_salted_deterministically():
    # 6 hex digits: 20,000 combinations at one start collide about 12 times.
    g = Granularity(1, Unit.DAY)
    values = [f"v{i}" for i in range(1000)]
    dims = [("k", values), ("j", [str(i) for i in range(20)])]
    eps = _epochs.generate(0, 1, g, dims)
    ids = [e.epoch_id for e in eps]
    assert len(set(ids)) == len(ids) == 20_000
    plain = [_epochs.epoch_id(e.start_ms, e.end_ms, "", e.dims) for e in eps]
    assert len(set(plain)) < len(plain)  # there really was a collision to break
    assert _epochs.generate(0, 1, g, [dims[1], ("k", list(reversed(values)))]) == eps


@given(
    start=st.integers(min_value=0, max_value=4_000_000_000_000),
    length=st.integers(min_value=1, max_value=400 * 86_400_000),
    value=st.integers(min_value=1, max_value=5),
    unit=st.sampled_from(list(Unit)),
)
@settings(max_examples=200, deadline=None)
def test_windows_tile_and_cover(start, length, value, unit):
    g = Granularity(value, unit)
    wins = list(_epochs.iter_windows(start, start + length, g))
    assert len(wins) == _epochs.count_windows(start, start + length, g)
    assert wins[0][0] <= start < wins[0][1]
    assert wins[-1][0] < start + length <= wins[-1][1]
    for (s0, e0), (s1, e1) in zip(wins, wins[1:]):
        assert e0 == s1 and s0 < e0
