"""Tests for the linearizability checker: hand-made histories, then randomized ones judged by oracles.

The brute-force oracle tries every order of the ops (and every subset of the unanswered writes), so it
shares nothing with the checker's search beyond the definition of linearizability. A second, plain
memoised search (all keys at once, none of the checker's pruning rules) covers medium-sized histories.
"""

from __future__ import annotations

import random
import time
from functools import cache
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .linearizability import CheckerBudgetExceeded, CheckResult, Op, check_history


def w(client: int, value: str | None, call: int, ret: int | None, key: str = "x") -> Op:
    return Op(client=client, kind="write", key=key, value=value, call=call, ret=ret)


def r(client: int, value: str | None, call: int, ret: int | None, key: str = "x") -> Op:
    return Op(client=client, kind="read", key=key, value=value, call=call, ret=ret)


# --- brute-force oracle ---------------------------------------------------------------------------


def _legal(seq: tuple[Op, ...], initial: dict[str, str] | None) -> bool:
    """Is this total order a legal register execution that respects real time?"""
    for i, a in enumerate(seq):
        for b in seq[i + 1 :]:
            if b.ret is not None and b.ret < a.call:  # b finished before a started, yet comes after it
                return False
    state: dict[str, str | None] = dict(initial or {})
    for op in seq:
        if op.kind == "write":
            state[op.key] = op.value
        elif state.get(op.key) != op.value:
            return False
    return True


def brute_force(ops: list[Op], initial: dict[str, str] | None = None) -> bool:
    """Linearizable iff some order of the answered ops plus some subset of the unanswered writes is legal."""
    ops = [op for op in ops if not (op.kind == "read" and op.ret is None)]
    answered = [op for op in ops if op.ret is not None]
    pending = [op for op in ops if op.ret is None]
    assert len(ops) <= 8, "brute force is for small histories only"
    for mask in range(1 << len(pending)):
        chosen = answered + [op for i, op in enumerate(pending) if mask >> i & 1]
        if any(_legal(seq, initial) for seq in permutations(chosen)):
            return True
    return False


def reference(ops: list[Op], initial: dict[str, str] | None = None) -> bool:
    """Plain Wing & Gong search with a memo: no per-key split, no forced reads, no pending-write rules."""
    ops = [op for op in ops if not (op.kind == "read" and op.ret is None)]

    @cache
    def search(remaining: frozenset[int], state: tuple[tuple[str, str | None], ...]) -> bool:
        if all(ops[i].ret is None for i in remaining):
            return True  # unanswered writes left over take effect last, or never
        first_ret = min(r for i in remaining if (r := ops[i].ret) is not None)
        values = dict(state)
        for i in remaining:
            op = ops[i]
            if op.call > first_ret:
                continue  # some remaining op finished before this one started
            if op.kind == "read":
                if values.get(op.key) == op.value and search(remaining - {i}, state):
                    return True
            elif search(remaining - {i}, tuple(sorted({**values, op.key: op.value}.items()))):
                return True
        return False

    return search(frozenset(range(len(ops))), tuple(sorted((initial or {}).items())))


def check(ops: list[Op], initial: dict[str, str] | None = None) -> CheckResult:
    """check_history, cross-checked against the oracles whenever the history is small enough."""
    res = check_history(ops, initial=initial)
    if len(ops) <= 7:
        assert res.ok == brute_force(ops, initial), (ops, res)
    if len(ops) <= 30:
        assert res.ok == reference(ops, initial), (ops, res)
    assert res.ok == (res.key is None)
    assert res.explanation
    return res


# --- hand-made histories --------------------------------------------------------------------------


def test_empty_and_sequential() -> None:
    assert check([]).ok
    assert check([r(0, None, 0, 1), w(0, "a", 2, 3), r(1, "a", 4, 5), w(1, "b", 6, 7), r(0, "b", 8, 9)]).ok


def test_overlapping_write_and_read_may_see_either_value() -> None:
    assert check([w(0, "a", 0, 10), r(1, "a", 2, 5)]).ok
    assert check([w(0, "a", 0, 10), r(1, None, 2, 5)]).ok
    assert check([r(1, "a", 0, 10), w(0, "a", 2, 5)]).ok
    assert check([r(1, None, 0, 10), w(0, "a", 2, 5)]).ok


def test_stale_read_after_completed_write_fails() -> None:
    res = check([w(0, "a", 0, 1), w(0, "b", 2, 3), r(1, "a", 4, 5)])
    assert not res.ok and res.key == "x"
    assert "read()->'a' [4, 5]" in res.explanation


def test_read_of_a_value_never_written_fails() -> None:
    res = check([w(0, "a", 0, 1), r(1, "zzz", 2, 3)])
    assert not res.ok and res.key == "x"
    assert not check([r(1, "zzz", 0, 3)]).ok


def test_pending_write_observed_later_is_ok() -> None:
    assert check([w(0, "a", 0, None), r(1, "a", 10, 11)]).ok
    assert check([w(0, "a", 0, None), w(1, "b", 1, 2), r(1, "b", 3, 4), r(2, "a", 5, 6)]).ok
    # ... but not before it was invoked
    assert not check([r(1, "a", 0, 1), w(0, "a", 5, None)]).ok


def test_pending_write_never_observed_is_ok() -> None:
    assert check([w(0, "a", 0, None), r(1, None, 10, 11)]).ok
    assert check([w(0, "a", 0, 1), w(1, "b", 2, None), r(0, "a", 3, 4), r(0, "a", 50, 51)]).ok
    # once it has been observed it has taken effect, for good
    assert not check([w(0, "a", 0, None), r(1, "a", 5, 6), r(1, None, 7, 8)]).ok


def test_each_pending_write_takes_effect_at_most_once() -> None:
    lost = [w(0, "a", 0, None), r(1, "a", 1, 2), w(1, "b", 3, 4), r(1, "b", 5, 6), r(2, "a", 7, 8)]
    assert not check(lost).ok
    assert check([*lost, w(3, "a", 0, None)]).ok  # a second lost write of "a" explains the last read


def test_new_then_old_value_in_non_overlapping_reads_fails() -> None:
    res = check([w(0, "a", 0, 1), w(0, "b", 2, 20), r(1, "b", 3, 4), r(2, "a", 5, 6)])
    assert not res.ok and res.key == "x"
    # the same two reads overlapping each other are fine
    assert check([w(0, "a", 0, 1), w(0, "b", 2, 20), r(1, "b", 3, 6), r(2, "a", 4, 5)]).ok


def test_concurrent_writes_with_reads_consistent_with_one_order() -> None:
    assert check([w(0, "a", 0, 10), w(1, "b", 0, 10), r(2, "a", 11, 12), r(2, "a", 13, 14)]).ok
    assert check([w(0, "a", 0, 10), w(1, "b", 0, 10), r(2, "a", 1, 2), r(2, "b", 3, 4), r(3, "b", 11, 12)]).ok
    assert not check([w(0, "a", 0, 10), w(1, "b", 0, 10), r(2, "b", 11, 12), r(2, "a", 13, 14)]).ok
    assert not check(
        [w(0, "a", 0, 10), w(1, "b", 0, 10), r(2, "a", 1, 2), r(2, "b", 3, 4), r(3, "a", 11, 12)]
    ).ok


def test_equal_timestamps_count_as_concurrent() -> None:
    assert check([w(0, "a", 0, 5), r(1, None, 5, 6)]).ok
    assert not check([w(0, "a", 0, 5), r(1, None, 6, 7)]).ok


def test_unanswered_reads_are_dropped() -> None:
    assert check([w(0, "a", 0, 1), r(1, "never-written", 2, None), r(1, "a", 3, 4)]).ok


def test_initial_values() -> None:
    assert check([r(0, "0", 0, 1)], initial={"x": "0"}).ok
    assert not check([r(0, "0", 0, 1)]).ok
    assert not check([r(0, None, 0, 1)], initial={"x": "0"}).ok
    assert check([r(0, None, 0, 1, key="y")], initial={"x": "0"}).ok


def test_keys_are_checked_independently_and_the_failing_one_is_named() -> None:
    ops = [
        w(0, "a", 0, 1, key="x"),
        w(1, "a", 0, 1, key="y"),
        w(0, "b", 2, 3, key="y"),
        r(1, "a", 4, 5, key="x"),
        r(2, "a", 6, 7, key="y"),  # stale on y
        r(2, "a", 8, 9, key="x"),
    ]
    res = check(ops)
    assert not res.ok and res.key == "y"
    assert "'y'" in res.explanation


def test_explanation_points_at_the_shortest_failing_prefix() -> None:
    ops = [w(0, "a", 0, 1), w(1, "b", 2, 3), r(2, "a", 4, 5)]
    ops += [w(0, str(i), 10 + 3 * i, 11 + 3 * i) for i in range(50)]  # noise after the violation
    res = check_history(ops)
    assert not res.ok
    assert "up to t=5" in res.explanation and "3 ops" in res.explanation
    assert "c2 read()->'a' [4, 5]" in res.explanation


def test_budget_exceeded_raises_instead_of_guessing() -> None:
    ops = [w(i, str(i), 0, 100) for i in range(6)] + [
        r(9, str(i), 101 + 2 * i, 102 + 2 * i) for i in range(3)
    ]
    with pytest.raises(CheckerBudgetExceeded) as exc:
        check_history(ops, budget=5)
    assert exc.value.key == "x"
    assert not check_history(ops).ok  # genuinely needs a search: three different values after all writes


def test_malformed_ops_are_rejected() -> None:
    with pytest.raises(ValueError):
        check_history([w(0, "a", 5, 4)])
    with pytest.raises(ValueError):
        check_history([Op(client=0, kind="cas", key="x", value="a", call=0, ret=1)])  # type: ignore[arg-type]


# --- randomized -----------------------------------------------------------------------------------


def execution(
    rng: random.Random,
    n_ops: int,
    *,
    clients: int = 3,
    keys: tuple[str, ...] = ("x",),
    values: tuple[str, ...] = ("a", "b", "c"),
    width: int = 6,
    p_lost: float = 0.1,
) -> list[Op]:
    """A history of a real sequential execution: each op takes effect at a distinct instant inside its
    interval, clients issue one op at a time, and some ops never get an answer (lost writes took
    effect, or not, at random)."""
    state: dict[str, str | None] = {}
    busy_until = [-1] * clients
    ops: list[Op] = []
    t = 0
    for i in range(n_ops):
        t += rng.randint(1, 3)
        free = [c for c in range(clients) if busy_until[c] < t]
        if not free:
            t = min(busy_until) + 1
            free = [c for c in range(clients) if busy_until[c] < t]
        c = rng.choice(free)
        key = rng.choice(keys)
        call = rng.randint(max(busy_until[c] + 1, t - width), t)
        ret = rng.randint(t, t + width)  # a lost op still keeps its client busy until then
        lost = rng.random() < p_lost
        if rng.random() < 0.5:
            value: str | None = values[i % len(values)] if len(values) > 20 else rng.choice(values)
            if not (lost and rng.random() < 0.5):
                state[key] = value
            op = Op(c, "write", key, value, call, None if lost else ret)
        else:
            op = Op(c, "read", key, state.get(key), call, None if lost else ret)
        busy_until[c] = ret
        ops.append(op)
    rng.shuffle(ops)  # the checker must not rely on the order ops are handed over
    return ops


def mutate_a_read(rng: random.Random, ops: list[Op], values: tuple[str | None, ...]) -> list[Op] | None:
    reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.ret is not None]
    if not reads:
        return None
    i = rng.choice(reads)
    choices = [v for v in values if v != ops[i].value]
    out = list(ops)
    out[i] = Op(ops[i].client, "read", ops[i].key, rng.choice(choices), ops[i].call, ops[i].ret)
    return out


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 7), st.integers(1, 4), st.integers(0, 8))
def test_executions_are_linearizable_and_mutations_match_brute_force(
    rng: random.Random, n_ops: int, clients: int, width: int
) -> None:
    ops = execution(
        rng, n_ops, clients=clients, keys=("x", "y") if rng.random() < 0.3 else ("x",), width=width
    )
    assert check(ops).ok
    mutated = mutate_a_read(rng, ops, ("a", "b", "c", None, "never-written"))
    if mutated is not None:
        check(mutated)  # compared with the brute-force oracle inside


_small_op = st.builds(
    Op,
    client=st.integers(0, 3),
    kind=st.sampled_from(["read", "write"]),
    key=st.sampled_from(["x", "x", "y"]),
    value=st.sampled_from(["a", "b", None]),
    call=st.integers(0, 12),
    ret=st.one_of(st.none(), st.integers(0, 6)),
).map(
    lambda op: Op(op.client, op.kind, op.key, op.value, op.call, None if op.ret is None else op.call + op.ret)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_small_op, max_size=7), st.sampled_from([None, {"x": "a"}, {"y": "b"}]))
def test_arbitrary_small_histories_match_brute_force(ops: list[Op], initial: dict[str, str] | None) -> None:
    check(ops, initial)


_medium_op = st.builds(
    Op,
    client=st.integers(0, 3),
    kind=st.sampled_from(["read", "write"]),
    key=st.sampled_from(["x", "x", "y"]),
    value=st.sampled_from(["a", "b", "c", None]),
    call=st.integers(0, 30),
    ret=st.one_of(st.none(), st.integers(0, 8), st.integers(0, 8)),
).map(
    lambda op: Op(op.client, op.kind, op.key, op.value, op.call, None if op.ret is None else op.call + op.ret)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_medium_op, min_size=8, max_size=16), st.sampled_from([None, {"x": "a"}]))
def test_arbitrary_medium_histories_match_the_reference_search(
    ops: list[Op], initial: dict[str, str] | None
) -> None:
    check(ops, initial)


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(8, 25), st.integers(2, 5), st.integers(0, 12))
def test_medium_executions_and_their_mutations_match_the_reference_search(
    rng: random.Random, n_ops: int, clients: int, width: int
) -> None:
    ops = execution(rng, n_ops, clients=clients, keys=("x", "y"), width=width, p_lost=0.3)
    assert check(ops).ok
    mutated = mutate_a_read(rng, ops, ("a", "b", "c", None))
    if mutated is not None:
        check(mutated)


@pytest.mark.parametrize("seed", range(40))
def test_larger_executions_pass_and_a_read_of_an_unwritten_value_is_caught(seed: int) -> None:
    rng = random.Random(seed)
    keys = ("k0", "k1", "k2")
    ops = execution(rng, 150, clients=4, keys=keys, values=("a", "b", "c", "d"), width=10, p_lost=0.05)
    assert check_history(ops).ok
    mutated = mutate_a_read(rng, ops, ("never-written",))
    assert mutated is not None
    bad = next(op for op in mutated if op.value == "never-written")
    res = check_history(mutated)
    assert not res.ok and res.key == bad.key
    assert f"read()->'never-written' [{bad.call}, {bad.ret}]" in res.explanation


def test_stale_read_in_a_long_history_is_caught() -> None:
    rng = random.Random(7)
    ops = execution(rng, 400, clients=4, keys=("k",), values=tuple(f"v{i}" for i in range(400)), p_lost=0.05)
    assert check_history(ops).ok
    # then a read issued after two later writes completed, returning the older one's value
    last = max(op.ret or op.call for op in ops) + 10
    ops += [w(8, "old", last, last + 1, key="k"), w(8, "new", last + 2, last + 3, key="k")]
    res = check_history([*ops, r(9, "old", last + 4, last + 5, key="k")])
    assert not res.ok and f"up to t={last + 5}" in res.explanation
    assert check_history([*ops, r(9, "new", last + 4, last + 5, key="k")]).ok


def test_two_thousand_ops_check_fast() -> None:
    rng = random.Random(2024)
    keys = tuple(f"k{i}" for i in range(5))
    ops = execution(rng, 2000, clients=5, keys=keys, values=tuple(f"v{i}" for i in range(2000)), width=8)
    check_history(ops)  # warm-up
    start = time.perf_counter()
    res = check_history(ops)
    elapsed = time.perf_counter() - start
    assert res.ok, res.explanation
    assert elapsed < 0.5, f"2,000-op history took {elapsed * 1000:.0f} ms"  # typically well under 50 ms
