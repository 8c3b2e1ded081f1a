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
