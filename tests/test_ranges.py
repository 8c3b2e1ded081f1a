"""RangeSet against the obvious model: a Python set of integers."""

from hypothesis import given, strategies as st

from simulator.ranges import RangeSet

spans = st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 60)), max_size=25)


def _apply(ops):
    r, model = RangeSet(), set()
    for add, start, length in ops:
        if add:
            r.add(start, start + length)
            model |= set(range(start, start + length))
        else:
            r.remove(start, start + length)
            model -= set(range(start, start + length))
    return r, model


@given(spans)
def test_add_remove_match_a_set(ops):
    r, model = _apply(ops)
    assert r.total() == len(model)
    assert {i for s, e in r for i in range(s, e)} == model
    intervals = list(r)
    for (s1, e1), (s2, e2) in zip(intervals, intervals[1:]):
        assert e1 < s2  # disjoint and not touching: normalised
    assert all(s < e for s, e in intervals)


@given(spans, st.integers(0, 250), st.integers(0, 80), st.integers(1, 64))
def test_queries_match_a_set(ops, start, length, unit):
    r, model = _apply(ops)
    window = set(range(start, start + length))
    assert r.overlap(start, start + length) == len(model & window)
    assert r.covers(start, start + length) == window.issubset(model)
    assert {i for s, e in r.gaps(start, start + length) for i in range(s, e)} == window - model
    assert r.count_units(unit) == len({i // unit for i in model})


@given(spans, st.integers(0, 250))
def test_truncate_drops_everything_beyond(ops, size):
    r, model = _apply(ops)
    r.truncate(size)
    assert {i for s, e in r for i in range(s, e)} == {i for i in model if i < size}


def test_a_tebibyte_costs_two_integers():
    r = RangeSet()
    r.add(0, 2**40)
    r.add(2**40 + 1, 2**40 + 2)
    assert r.total() == 2**40 + 1
    assert len(r) == 2
    assert r.count_units(65536) == 2**24 + 1


def _members(r: RangeSet) -> set[int]:
    return {i for s, e in r for i in range(s, e)}


def _normalised(r: RangeSet) -> bool:
    intervals = list(r)
    return all(s < e for s, e in intervals) and all(e1 < s2 for (_, e1), (s2, _) in zip(intervals, intervals[1:]))


# Up to 400 intervals: past MERGE_IN_NUMPY (256), so both of add_many's merges are checked.
many_spans = st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 40)), max_size=400)


@given(spans, many_spans)
def test_add_many_and_update_match_a_set(ops, added):
    r, model = _apply(ops)
    other = RangeSet()
    for start, length in added:
        other.add(start, start + length)
    merged = r.copy()
    merged.add_many([s for s, _ in added], [s + n for s, n in added])
    updated = r.copy()
    updated.update(other)
    expected = model | {i for s, n in added for i in range(s, s + n)}
    for result in (merged, updated):
        assert _members(result) == expected
        assert _normalised(result)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3000), st.integers(1, 40)), min_size=1, max_size=300),
       st.integers(0, 100))
def test_of_run_is_the_union_of_the_run(writes, start):
    """Contiguous runs (appends: one interval, no sort) and any other run (sort and merge)."""
    starts, ends = [], []
    offset = start
    for contiguous, at, length in writes:
        offset = offset if contiguous else at
        starts.append(offset)
        ends.append(offset + length)
        offset += length
    run = RangeSet.of_run(starts, ends)
    assert _members(run) == {i for s, e in zip(starts, ends) for i in range(s, e)}
    assert _normalised(run)


def test_of_run_of_appends_is_one_interval():
    assert list(RangeSet.of_run([0, 512, 1024], [512, 1024, 1536])) == [(0, 1536)]
    assert list(RangeSet.of_run([1024, 0], [1536, 512])) == [(0, 512), (1024, 1536)]


def test_add_many_past_int64_merges_in_python():
    r = RangeSet()
    r.add_many([2**63] * 300, [2**63 + 10] * 300)
    r.add_many(list(range(0, 3000, 10)), list(range(5, 3005, 10)))
    assert len(r) == 301 and r.end() == 2**63 + 10 and r.total() == 10 + 300 * 5


def test_add_many_in_numpy_matches_a_set():
    """A seeded run of 1,000 writes, empties included: past MERGE_IN_NUMPY for sure."""
    import random

    rng = random.Random(7)
    r = RangeSet()
    r.add(100, 200)
    starts = [rng.randrange(20000) for _ in range(1000)]
    ends = [s + rng.randrange(0, 30) for s in starts]
    r.add_many(starts, ends)
    assert _members(r) == set(range(100, 200)) | {i for s, e in zip(starts, ends) for i in range(s, e)}
    assert _normalised(r)


@given(spans, st.integers(1, 64))
def test_units_are_the_normalised_set_of_units_met(ops, unit):
    r, model = _apply(ops)
    units = r.units(unit)
    assert _members(units) == {i // unit for i in model}
    assert _normalised(units)


def test_of_units_by_hand() -> None:
    """Blocks 3, 1, 2, 7 and 2 again of 4 KiB: bytes [4096, 16384) and [28672, 32768)."""
    assert list(RangeSet.of_units([3, 1, 2, 7, 2], 4096)) == [(4096, 16384), (28672, 32768)]
    assert not RangeSet.of_units(set(), 4096)


@given(st.sets(st.integers(0, 200)), st.integers(1, 9))
def test_of_units_matches_adding_each(units, unit):
    one = RangeSet()
    for u in units:
        one.add(u * unit, (u + 1) * unit)
    assert RangeSet.of_units(units, unit) == one
