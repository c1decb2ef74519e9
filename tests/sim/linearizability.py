"""Linearizability checker for the key-value histories recorded by the Raft simulation.

Why it exists: the simulation proves the Raft library only if every history its clients observe could
have been produced by one atomic register per key. This module decides that.

How: Wing & Gong's backtracking search over the history's events with Lowe's improvements:

* P-compositionality: a KV history is linearizable iff each key's sub-history is, so every key is
  searched on its own (exponential in the per-key concurrency, not in the whole history).
* Memoisation: a configuration is (set of linearized ops as an int bitset, register value). Two paths
  reaching the same configuration have the same future, so each one is explored at most once; one
  that differs only by using more writes without a response than a failed one is skipped too.
* Just-in-time linearisation: an op is linearized only when the search needs it. A read is placed as
  soon as the register holds its value (a forced move: placing it earlier can never hurt, so its
  alternatives are not explored); a write whose response never came is placed only right before a
  read that needs its value (otherwise it may as well never have happened), and only the earliest
  unused one per value (once invoked, such writes are interchangeable); completed writes are tried
  only while they are "minimal" - invoked before the earliest response still outstanding.

On failure, the explanation names the shortest failing prefix of that key's history (found by a
binary search that the failed search's furthest progress usually settles at once) and the longest
consistent order the search found for it.

Time convention: op ``a`` precedes op ``b`` in real time iff ``a.ret < b.call``; equal timestamps
count as concurrent, which never reports a violation the timestamps cannot prove.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, NamedTuple

__all__ = ["CheckResult", "CheckerBudgetExceeded", "Op", "check_history"]

_SHOW_OPS = 15  # explanation: at most this many ops of the failing prefix are listed
_SHOW_ORDER = 8  # explanation: at most this many ops of the longest consistent order are listed


@dataclass
class Op:
    """One client operation on one key, as recorded by the simulation."""

    client: int
    kind: Literal["read", "write"]
    key: str
    value: str | None  # write: the value written; read: the value returned (None = key absent)
    call: int  # logical invocation time
    ret: int | None  # logical response time; None = no response: may take effect after `call`, or never


@dataclass
class CheckResult:
    """Verdict of `check_history`; `key` and `explanation` say where and why it failed."""

    ok: bool
    key: str | None  # the first key (in order of first appearance) whose history is not linearizable
    explanation: str  # human-readable: the shortest failing prefix and where the search got stuck


class CheckerBudgetExceeded(RuntimeError):
    """The search for one key took more than `budget` steps: the history is neither proven nor refuted.

    Raised instead of guessing, so a slow check can never pass as a linearizable history.
    """

    def __init__(self, key: str, budget: int, n_ops: int) -> None:
        super().__init__(
            f"linearizability search for key {key!r} ({n_ops} ops) exceeded its budget of {budget} steps; "
            "the history is neither proven nor refuted (raise `budget` or record a shorter history)"
        )
        self.key = key
        self.budget = budget
        self.n_ops = n_ops


class _KOp(NamedTuple):
    """A per-key op as the search sees it; `src` is the recorded op, for explanations."""

    is_write: bool
    value: str | None
    call: int
    ret: int | None  # None: a pending write (pending reads are dropped before the search)
    src: Op


class _Outcome(NamedTuple):
    ok: bool
    steps: int
    # The latest response time some reached configuration had still ahead of it: every prefix of the
    # history ending before it is linearizable (see `_explain`).
    frontier: int
    # Filled only when the search was asked to record (explanations): the deepest partial linearization.
    best_order: list[int]
    best_state: str | None
    blocked: int | None  # the op whose response could not be passed from the deepest configuration


def check_history(
    ops: list[Op], *, initial: dict[str, str] | None = None, budget: int = 2_000_000
) -> CheckResult:
    """Check that `ops` is linearizable w.r.t. one register per key (initially None or `initial[key]`).

    Reads without a response are dropped (they carry no information); writes without one may take
    effect at any time after their call, or never. `budget` bounds the search steps per key; exceeding
    it raises `CheckerBudgetExceeded` rather than returning an unproven verdict.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    by_key: dict[str, list[_KOp]] = {}
    for op in ops:
        _validate(op)
        if op.kind == "read" and op.ret is None:
            continue
        by_key.setdefault(op.key, []).append(_KOp(op.kind == "write", op.value, op.call, op.ret, op))
    init = initial or {}
    for key, kops in by_key.items():
        out = _search(kops, init.get(key), budget, key, record=False)
        if not out.ok:
            return CheckResult(False, key, _explain(key, kops, init.get(key), budget, out.frontier))
    return CheckResult(True, None, f"linearizable: {len(ops)} ops on {len(by_key)} key(s)")


def _validate(op: Op) -> None:
    """Reject malformed records early: a silently odd op would make the verdict meaningless."""
    if op.kind not in ("read", "write"):
        raise ValueError(f"unknown op kind {op.kind!r} in {op!r}")
    if op.ret is not None and op.ret < op.call:
        raise ValueError(f"op responds before its call: {op!r}")


def _search(kops: Sequence[_KOp], initial: str | None, budget: int, key: str, record: bool) -> _Outcome:
    """Wing & Gong / Lowe search over one key's history; see the module docstring for the rules.

    The calls and responses of the ops that have a response sit in a doubly linked list sorted by
    time, calls before responses at equal times. Linearizing an op "lifts" its call and response out
    of the list (dancing links, so backtracking restores them in O(1)). The ops that may be linearized
    next are the calls in front of the first response still in the list, plus the pending writes
    invoked by then. Pending writes stay out of the list: they never leave that window once in it,
    and scanning them at every step would make long histories with lost writes quadratic.
    A step is one attempted linearization or one backtrack.
    """
    n = len(kops)
    is_write = [k.is_write for k in kops]
    value = [k.value for k in kops]
    call = [k.call for k in kops]
    completed = [k.ret is not None for k in kops]
    n_completed = sum(completed)
    # Bit numbers: ops with a response and pending writes are numbered apart, each in call order, so
    # the linearized ops with a response are mostly one run of low bits (see `_enter`).
    bitno = [0] * n
    numbered = [0, 0]
    by_call = sorted(range(n), key=lambda i: call[i])
    for i in by_call:
        bitno[i] = numbered[completed[i]]
        numbered[completed[i]] += 1
    # Pending writes per value, in call order. Only the earliest unused one of a value is ever tried
    # (they are interchangeable once invoked), so the used ones are always a prefix: `used[v]` long.
    pending_of: dict[str | None, list[int]] = {}
    for i in by_call:
        if not completed[i]:
            pending_of.setdefault(value[i], []).append(i)
    used = dict.fromkeys(pending_of, 0)

    events: list[tuple[int, int, int]] = []
    for i, k in enumerate(kops):
        if k.ret is not None:
            events.append((k.call, 0, i))
            events.append((k.ret, 1, i))
    events.sort()
    m = len(events)
    head, tail = m, m + 1
    ent_time = [t for t, _, _ in events] + [0, 0]
    ent_op = [i for _, _, i in events] + [-1, -1]
    ent_call = [kind == 0 for _, kind, _ in events] + [False, False]  # tail stops every scan
    call_entry = [-1] * n
    ret_entry = [-1] * n
    for e, (_, kind, i) in enumerate(events):
        (ret_entry if kind else call_entry)[i] = e
    nxt = [0] * (m + 2)
    prv = [0] * (m + 2)
    for a, b in pairwise([head, *range(m), tail]):
        nxt[a] = b
        prv[b] = a

    state = initial
    core = 0  # bitset of the linearized ops that have a response
    pend = 0  # bitset of the linearized pending writes
    done = 0  # ops with a response linearized; success when all are
    # Frames: (op linearized, register value before it, the pending writes worth trying in the
    # configuration it was pushed from, or None for a forced read - failing after a forced move fails
    # its parent too).
    stack: list[tuple[int, str | None, tuple[int, ...] | None]] = []
    cache: dict[tuple[int, int, str | None], list[int]] = {}  # see `_enter`
    steps = 0
    frontier = -1
    best_done = -1
    best_order: list[int] = []  # ops of the deepest stack; its first `agree` still match `stack`
    agree = 0
    best_state: str | None = None
    blocked: int | None = None

    fresh = True  # False: resuming a configuration after a backtrack, at `scan` then `cands[ci:]`
    scan = tail
    cands: tuple[int, ...] = ()
    ci = 0
    while True:
        if fresh:
            if done == n_completed:
                return _Outcome(True, steps, frontier, [], None, None)
            # A minimal read of the current value is linearized at once (no choice point). The
            # values the other minimal reads want decide which pending writes are worth trying.
            e = nxt[head]
            forced = -1
            want: dict[str | None, None] = {}
            while ent_call[e]:
                o = ent_op[e]
                if not is_write[o]:
                    if value[o] == state:
                        forced = e
                        break
                    want[value[o]] = None
                e = nxt[e]
            if forced >= 0:
                steps += 1
                if steps > budget:
                    raise CheckerBudgetExceeded(key, budget, n)
                o = ent_op[forced]
                if _enter(cache, core | 1 << bitno[o], state, pend):
                    stack.append((o, state, None))
                    _lift(forced, ret_entry[o], nxt, prv)
                    core |= 1 << bitno[o]
                    done += 1
                    continue
                scan, cands = tail, ()  # that configuration already failed, hence so does this one
            else:
                first_ret = ent_time[e]  # e: the first response still ahead
                frontier = max(frontier, first_ret)
                if record and done > best_done:
                    best_done, best_state, blocked = done, state, ent_op[e]
                    del best_order[agree:]
                    best_order.extend(f[0] for f in stack[agree:])
                    agree = len(stack)
                cands = tuple(
                    pending_of[v][used[v]]
                    for v in want
                    if v in used
                    and used[v] < len(pending_of[v])
                    and call[pending_of[v][used[v]]] <= first_ret
                )
                scan = nxt[head]
            ci = 0

        # Try the minimal writes with a response, from `scan` on, then the useful pending writes.
        pushed = False
        e = scan
        while ent_call[e]:
            o = ent_op[e]
            if is_write[o]:
                steps += 1
                if steps > budget:
                    raise CheckerBudgetExceeded(key, budget, n)
                c = core | 1 << bitno[o]
                if _enter(cache, c, value[o], pend):
                    stack.append((o, state, cands))
                    _lift(e, ret_entry[o], nxt, prv)
                    core, state = c, value[o]
                    done += 1
                    pushed = True
                    break
            e = nxt[e]
        if not pushed:
            for o in cands[ci:]:
                steps += 1
                if steps > budget:
                    raise CheckerBudgetExceeded(key, budget, n)
                p = pend | 1 << bitno[o]
                if _enter(cache, core, value[o], p):
                    stack.append((o, state, cands))
                    used[value[o]] += 1
                    pend, state = p, value[o]
                    pushed = True
                    break
        if pushed:
            fresh = True
            continue

        # Dead end: undo forced moves, then resume after the last real choice.
        while True:
            steps += 1
            if steps > budget:
                raise CheckerBudgetExceeded(key, budget, n)
            if not stack:
                return _Outcome(False, steps, frontier, best_order, best_state, blocked)
            o, state, parent_cands = stack.pop()
            agree = min(agree, len(stack))
            if completed[o]:
                _unlift(call_entry[o], ret_entry[o], nxt, prv)
                core ^= 1 << bitno[o]
                done -= 1
            else:
                used[value[o]] -= 1
                pend ^= 1 << bitno[o]
            if parent_cands is not None:
                fresh = False
                cands = parent_cands
                if completed[o]:
                    scan, ci = nxt[call_entry[o]], 0
                else:
                    scan, ci = tail, parent_cands.index(o) + 1
                break


def _enter(
    cache: dict[tuple[int, int, str | None], list[int]], core: int, state: str | None, pend: int
) -> bool:
    """Record a configuration; False if it, or one like it using fewer pending writes, was entered.

    Using fewer pending writes never hurts (an unused one may still be dropped). Skipping is sound
    because an entered configuration is never an ancestor of one with the same `core` (the search
    cannot chain pending writes without linearizing a read in between), so it has already failed.
    `core` is keyed as (run of low one bits, the rest): hashing stays cheap on long histories.
    """
    run = (core ^ (core + 1)).bit_length() - 1
    key = (run, core >> run, state)
    seen = cache.get(key)
    if seen is None:
        cache[key] = [pend]
        return True
    for m in seen:
        if not m & ~pend:
            return False
    seen[:] = [m for m in seen if pend & ~m]  # drop the entries this one dominates
    seen.append(pend)
    return True


def _lift(e: int, r: int, nxt: list[int], prv: list[int]) -> None:
    """Unlink call entry `e` and its response entry `r` (if any) from the event list."""
    nxt[prv[e]] = nxt[e]
    prv[nxt[e]] = prv[e]
    if r >= 0:
        nxt[prv[r]] = nxt[r]
        prv[nxt[r]] = prv[r]


def _unlift(e: int, r: int, nxt: list[int], prv: list[int]) -> None:
    """Relink what `_lift` unlinked, in reverse order (their own pointers were left intact)."""
    if r >= 0:
        nxt[prv[r]] = r
        prv[nxt[r]] = r
    nxt[prv[e]] = e
    prv[nxt[e]] = e


def _prefix(kops: Sequence[_KOp], t: int) -> list[_KOp]:
    """The history as it stood at time `t`: later responses are not yet known.

    Non-linearizability is monotone in `t` (a prefix only loses real-time constraints and ops that
    may be dropped), which is what lets `_explain` binary-search the shortest failing prefix.
    """
    out: list[_KOp] = []
    for k in kops:
        if k.call > t:
            continue
        if k.ret is not None and k.ret <= t:
            out.append(k)
        elif k.is_write:
            out.append(k._replace(ret=None))
    return out


def _explain(key: str, kops: Sequence[_KOp], initial: str | None, budget: int, frontier: int) -> str:
    """Describe the shortest failing prefix of a failing key and where the search got stuck.

    The failed search reached a configuration with every response before `frontier` linearized, so
    every prefix ending before it is linearizable: the shortest failing one ends at or after it, most
    often exactly there, which is probed first; a binary search covers the rest. These re-runs share
    one more `budget`; when it runs out, the shortest failing prefix proven so far is reported.
    """
    rets = sorted({k.ret for k in kops if k.ret is not None})
    lo, hi = bisect_left(rets, frontier), len(rets) - 1  # the prefix at rets[-1] is known to fail
    left = budget
    stuck: _Outcome | None = None  # the recorded run of the prefix at rets[hi], once there is one
    shortened = True
    mid = lo
    while lo <= hi and not (lo == hi and stuck is not None):
        if left <= 0:
            shortened = lo == hi
            break
        try:
            out = _search(_prefix(kops, rets[mid]), initial, left, key, record=True)
        except CheckerBudgetExceeded:
            left = 0
            continue
        left -= out.steps
        if out.ok:
            lo = mid + 1
        else:
            hi, stuck = mid, out
        mid = (lo + hi) // 2
    if lo > hi:  # the whole history passed as a prefix: cannot happen with validated ops; stay honest
        shortened, stuck = False, None
    t = rets[hi]
    prefix = _prefix(kops, t)
    ending = [k for k in prefix if k.ret == t]
    lines = [
        f"key {key!r} is not linearizable (initial value {initial!r}).",
        f"{'Shortest' if shortened else 'Shortest found (search budget ran out)'} failing prefix: the "
        f"history up to t={t}, ending with the response of "
        + "; ".join(_fmt(k) for k in ending)
        + f". It has {len(prefix)} ops (writes without a response by then may take effect after "
        "their call, or never):",
    ]
    shown = sorted(prefix, key=lambda k: (k.call, k.ret is None, k.ret or 0))
    if len(shown) > _SHOW_OPS:
        lines.append(f"  ... {len(shown) - _SHOW_OPS} earlier ops omitted")
        shown = shown[-_SHOW_OPS:]
    lines.extend("  " + _fmt(k) for k in shown)
    if stuck is None:
        return "\n".join(lines)
    order = [prefix[i] for i in stuck.best_order]
    head = f"Longest consistent order found ({len(order)} ops)"
    if len(order) > _SHOW_ORDER:
        head += f", last {_SHOW_ORDER}"
        order = order[-_SHOW_ORDER:]
    lines.append(head + ": " + (" ; ".join(_fmt(k) for k in order) or "(none)"))
    if stuck.blocked is not None:
        lines.append(
            f"then the register holds {stuck.best_state!r} and no remaining op can be linearized before "
            f"the response of {_fmt(prefix[stuck.blocked])}."
        )
    return "\n".join(lines)


def _fmt(k: _KOp) -> str:
    """One op as `c<client> write('v') [call, ret]`, or `read()->'v'`; a pending op shows `[call, -]`."""
    op = k.src
    what = f"write({op.value!r})" if k.is_write else f"read()->{op.value!r}"
    ret = "-" if k.ret is None else str(k.ret)
    return f"c{op.client} {what} [{op.call}, {ret}]"
