"""An offline plan of TFLite Micro's tensor arena (its head: activations and kernel scratch).

TFLM plans the head itself at AllocateTensors (micro_allocator.cc CommitStaticMemoryPlan):
every tensor without data in the flatbuffer that is not a variable gets a live range from the
operator order (micro_allocation_info.cc MarkAllocationLifetimes: subgraph inputs live from
scope 0, op i's outputs are created and its inputs last used at scope i + 1, an op's outputs
are also used at its own scope, subgraph outputs live to the last scope), each kernel scratch
buffer lives at its op's scope, sizes are rounded up to 16 bytes (MicroArenaBufferAlignment),
and GreedyMemoryPlanner places them: offline-planned buffers first at their offsets, then the
rest largest first (a stable sort), each in the first gap between buffers whose ranges overlap.
That greedy is optimal on most models but not all (MLPerf Tiny VWW: the largest tensor goes
first and the earlier tensors stack on top of the model's input).

This module simulates TFLM exactly (so "TFLM's arena" is computed, and checked against the
interpreter's recording allocator by the tests), tries other placement orders and, where the
graph branches, other operator orders, and returns the best plan with the lower bound (the most
bytes live at any one scope). A plan fixes the tensors' offsets only (the
`OfflineMemoryAllocation` metadata has no entry for scratch buffers): TFLM still places the
scratch buffers online around them, and the figures here include that placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgeq.formats.tflite import ModelInfo
from edgeq.pipeline.arena_scratch import REFERENCE, Kernels, scratch_requests

ALIGNMENT = 16  # tensorflow/lite/micro/micro_arena_constants.h MicroArenaBufferAlignment()
_ITEM = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "float16": 2, "int32": 4,
         "float32": 4, "uint32": 4, "int64": 8, "float64": 8, "complex64": 8, "uint16": 2,
         "int4": 1}
# Ops whose order is state: reordering them could change what a model computes.
_STATEFUL = frozenset({"ASSIGN_VARIABLE", "READ_VARIABLE", "VAR_HANDLE", "CALL_ONCE", "IF",
                       "WHILE", "CUSTOM:CIRCULAR_BUFFER"})
_MAX_ORDERS = 6


@dataclass(frozen=True)
class Buffer:
    key: int  # tensor index, or -(k + 1) for the k-th scratch buffer
    size: int  # rounded up to ALIGNMENT
    first: int  # allocation scope of its first use
    last: int


@dataclass(frozen=True)
class Layout:
    """One placement: an offset for every buffer, and the head it needs."""

    offsets: dict[int, int]
    head: int


@dataclass(frozen=True)
class Plan:
    """The best plan found for one kernel build, next to TFLM's own."""

    kernels: str
    tflm_head: int  # TFLM's greedy planner on the model as given
    planned_head: int  # TFLM with this plan's tensor offsets (scratch placed online by TFLM)
    lower_bound: int  # the most bytes live at one scope, in the planned operator order
    lower_bound_as_given: int  # the same, in the model's own operator order
    heuristic: str  # which placement won ("tflm" when nothing beat TFLM)
    order: tuple[int, ...]  # operator order (indices into the model's operators)
    offsets: dict[int, int]  # tensor index -> offset, for every tensor TFLM plans
    tried: tuple[tuple[str, int], ...] = field(default=())
    as_given_head: int = 0  # TFLM on the file as given (its own offline plan, if it has one)

    @property
    def improves(self) -> bool:
        return self.planned_head < self.as_given_head

    @property
    def reordered(self) -> bool:
        return self.order != tuple(range(len(self.order)))


class NotPlannable(Exception):
    """The model is outside what the planner models (the reason is the message)."""


def tensor_bytes(shape: Iterable[int], dtype: str) -> int:
    """TfLiteEvalTensorByteLength: elements times the type's size (a 0 dimension is 0 bytes)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n * _ITEM.get(dtype, 4)


def aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def planned_tensors(info: ModelInfo) -> list[int]:
    """The tensors TFLM places in the head: no data in the flatbuffer, not a variable, not
    empty (AllocationInfoBuilder::InitializeAllocationInfo, needs_allocating)."""
    return [t.index for t in info.tensors
            if t.constant_bytes == 0 and not t.is_variable and tensor_bytes(t.shape, t.dtype)]


def buffers(info: ModelInfo, order: tuple[int, ...], scratch: list[tuple[int, ...]]
            ) -> list[Buffer]:
    """Every buffer TFLM's planner is given, in the order it adds them (tensors by index, then
    scratch buffers in request order, i.e. op order), with live ranges for `order`."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i in info.inputs:
        first.setdefault(i, 0)
        last[i] = 0
    scratch_bufs: list[Buffer] = []
    for scope, k in enumerate(order, start=1):
        op = info.ops[k]
        for i in op.outputs:
            if i >= 0:
                first.setdefault(i, scope)
        for i in (*op.inputs, *op.outputs):
            if i >= 0:
                last[i] = scope
        for size in scratch[k]:
            scratch_bufs.append(Buffer(-(len(scratch_bufs) + 1), aligned(size), scope, scope))
    end = len(order)
    for i in info.outputs:
        first.setdefault(i, end)
        last[i] = end
    out = []
    for i in planned_tensors(info):
        t = info.tensors[i]
        out.append(Buffer(i, aligned(tensor_bytes(t.shape, t.dtype)), first.get(i, -1),
                          last.get(i, -1)))
    return out + scratch_bufs


def tflm_layout(bufs: list[Buffer], offline: dict[int, int] | None = None) -> Layout:
    """GreedyMemoryPlanner::CalculateOffsetsIfNeeded, step for step: offline buffers first (in
    the order they were added), the others by size, largest first, each in the first
    gap, in offset order, between buffers live at the same time."""
    offline = offline or {}
    fixed = [b for b in bufs if b.key in offline]
    # The online buffers fill the sort array from its end (idx_from_tail--), so equal sizes
    # keep the reverse of the order they were added in (ReverseSortInPlace is stable).
    # (reversed() matters: sorted() is stable, so it sets the order of equal sizes)
    online = sorted(reversed([b for b in bufs if b.key not in offline]),  # noqa: C414
                    key=lambda b: -b.size)
    placed = _Placed()
    offsets: dict[int, int] = {}
    for n, b in enumerate(fixed + online):
        at = offline[b.key] if b.key in offline else _first_fit(placed, b)
        offsets[b.key] = at
        placed.add(at, n, b)
    head = max((offsets[b.key] + b.size for b in bufs), default=0)
    return Layout(offsets, head)


class _Placed:
    """The buffers placed so far, found by the scopes they live at. A placement looks only at
    the buffers whose live ranges overlap the new one's, in offset order (ties: the order they
    were placed, as TFLM inserts a buffer after those at its offset). Scanning every placed
    buffer for those made each layout quadratic in the buffers: 20,000 ops took minutes
    (issue 22); looked up by scope, a model of short-lived activations is placed in near
    linear time, with the same offsets."""

    def __init__(self) -> None:
        self._by_scope: dict[int, list[tuple[int, int, Buffer]]] = {}
        self._all: list[tuple[int, int, Buffer]] = []
        self._inverted: list[tuple[int, int, Buffer]] = []  # first > last: no scope holds it

    def add(self, at: int, n: int, b: Buffer) -> None:
        entry = (at, n, b)
        self._all.append(entry)
        if b.first > b.last:
            self._inverted.append(entry)
        for scope in range(b.first, b.last + 1):
            self._by_scope.setdefault(scope, []).append(entry)

    def overlapping(self, b: Buffer) -> list[tuple[int, int, Buffer]]:
        """(offset, placement number, buffer) of every placed buffer live with `b`, sorted,
        by the same test as TFLM's (an inverted range, first > last, is tested one by one)."""
        if b.first > b.last:
            candidates = self._all
        else:
            candidates = list(self._inverted)
            for scope in range(b.first, b.last + 1):
                candidates += self._by_scope.get(scope, ())
        found = {e[1]: e for e in candidates
                 if not (e[2].first > b.last or b.first > e[2].last)}
        return sorted(found.values(), key=lambda e: (e[0], e[1]))


def _first_fit(placed: _Placed, b: Buffer) -> int:
    candidate = 0
    prior: Buffer | None = None
    prior_at = 0
    for at, _, other in placed.overlapping(b):
        if prior is not None:
            candidate = max(candidate, prior_at + prior.size)
        if at - candidate >= b.size:
            return candidate
        prior, prior_at = other, at
    if prior is not None:
        candidate = max(candidate, prior_at + prior.size)
    return candidate


def _best_fit(placed: _Placed, b: Buffer) -> int:
    """The smallest gap between live buffers that holds `b`, else the top of the pile."""
    spans = sorted((at, at + o.size) for at, _, o in placed.overlapping(b))
    best, best_gap, top = None, None, 0
    for lo, hi in spans:
        gap = lo - top
        if gap >= b.size and (best_gap is None or gap < best_gap):
            best, best_gap = top, gap
        top = max(top, hi)
    return top if best is None else best


def lower_bound(bufs: list[Buffer]) -> int:
    """No plan can use less than the bytes live at the busiest scope (a sweep over the
    scopes where live ranges start and end)."""
    change: dict[int, int] = {}
    for b in bufs:
        if b.first <= b.last:
            change[b.first] = change.get(b.first, 0) + b.size
            change[b.last + 1] = change.get(b.last + 1, 0) - b.size
    points = sorted(change)
    best = live = j = 0
    for scope in sorted({s for b in bufs for s in (b.first, b.last)}):
        while j < len(points) and points[j] <= scope:
            live += change[points[j]]
            j += 1
        best = max(best, live)
    return best


def _orders(bufs: list[Buffer]) -> dict[str, list[Buffer]]:
    """Placement orders to try: TFLM's (size), and the usual alternatives for interval
    colouring (by lifetime, by first use, by op breadth: Pisarchyk & Lee 2020, "Efficient
    memory management for deep neural net inference")."""
    span = {b.key: b.last - b.first + 1 for b in bufs}
    breadth: dict[int, int] = {}
    for b in bufs:
        for s in range(b.first, b.last + 1):
            breadth[s] = breadth.get(s, 0) + b.size
    busiest = {b.key: max(breadth[s] for s in range(b.first, b.last + 1)) for b in bufs}
    return {
        "size": sorted(bufs, key=lambda b: (-b.size, b.first)),
        "size-then-longest": sorted(bufs, key=lambda b: (-b.size, -span[b.key], b.first)),
        "longest": sorted(bufs, key=lambda b: (-span[b.key], -b.size, b.first)),
        "first-use": sorted(bufs, key=lambda b: (b.first, -b.size)),
        "area": sorted(bufs, key=lambda b: (-b.size * span[b.key], b.first)),
        "breadth": sorted(bufs, key=lambda b: (-busiest[b.key], -b.size, b.first)),
    }


def _place(order: list[Buffer], fit) -> dict[int, int]:
    placed = _Placed()
    offsets = {}
    for n, b in enumerate(order):
        at = fit(placed, b)
        offsets[b.key] = at
        placed.add(at, n, b)
    return offsets


def best_layout(bufs: list[Buffer]) -> tuple[str, Layout, list[tuple[str, int]]]:
    """The smallest head over every heuristic, as TFLM would realise it: the heuristic's tensor
    offsets offline, its scratch buffers placed by TFLM's greedy."""
    best_name, best = "tflm", tflm_layout(bufs)
    tried = [("tflm", best.head)]
    done: dict[tuple[tuple[int, ...], str], Layout] = {}  # orders that coincide place alike
    for name, order in _orders(bufs).items():
        for fit_name, fit in (("first-fit", _first_fit), ("best-fit", _best_fit)):
            key = (tuple(b.key for b in order), fit_name)
            if key not in done:
                offsets = _place(order, fit)
                done[key] = tflm_layout(bufs, {k: v for k, v in offsets.items() if k >= 0})
            realised = done[key]
            tried.append((f"{name}/{fit_name}", realised.head))
            if realised.head < best.head:
                best_name, best = f"{name}/{fit_name}", realised
    return best_name, best, tried


def _scratch(info: ModelInfo, kernels: Kernels) -> list[tuple[int, ...]]:
    out = []
    for op in info.ops:
        try:
            sizes = scratch_requests(info, op, kernels)
        except (IndexError, AttributeError, TypeError, ValueError, ZeroDivisionError) as exc:
            # a shape or operand count the kernel would refuse at Prepare anyway
            raise NotPlannable(f"op {op.index} {op.op}: operands the {kernels.name} kernels "
                               f"do not take ({type(exc).__name__})") from exc
        if sizes is None:
            raise NotPlannable(f"op {op.index} {op.op}: its scratch buffers in the "
                               f"{kernels.name} kernels are not modelled")
        out.append(sizes)
    return out


def check_plannable(info: ModelInfo) -> None:
    """Raises NotPlannable for models outside what this planner simulates exactly."""
    if info.subgraphs != 1:
        raise NotPlannable(f"{info.subgraphs} subgraphs (control flow): TFLM plans them "
                           "together with nested scopes, which this planner does not model")
    # TFLM sizes tensors from `shape` (batch 1 where the signature says -1); strings have
    # no fixed size.
    if any(t.dtype == "string" for t in info.tensors):
        raise NotPlannable("string tensors")


def plan(info: ModelInfo, kernels: Kernels = REFERENCE,
         offline_as_given: dict[int, int] | None = None) -> Plan:
    """The best arena plan for `info` on `kernels`.

    Args:
        info: the model (one subgraph).
        kernels: the build whose scratch buffers count (edgeq.pipeline.arena_scratch).
        offline_as_given: offsets the model's own OfflineMemoryAllocation metadata already
            fixes (TFLM's figure for the file as given uses them).

    Raises:
        NotPlannable: control flow, or an op whose scratch buffers are not modelled.
    """
    check_plannable(info)
    scratch = _scratch(info, kernels)
    as_given = tuple(range(len(info.ops)))
    base = buffers(info, as_given, scratch)
    tflm = tflm_layout(base)  # TFLM's own planner, the metadata ignored
    given = tflm_layout(base, offline_as_given) if offline_as_given else tflm
    best = (given.head, "as given" if offline_as_given else "tflm", as_given,
            {k: v for k, v in given.offsets.items() if k >= 0}, lower_bound(base))
    tried: list[tuple[str, int]] = []
    for order in [as_given, *operator_orders(info)][:_MAX_ORDERS]:
        bufs = base if order == as_given else buffers(info, order, scratch)
        name, layout, attempts = best_layout(bufs)
        tag = "" if order == as_given else " (reordered ops)"
        tried += [(a + tag, h) for a, h in attempts]
        if layout.head < best[0]:
            best = (layout.head, name + tag, order,
                    {k: v for k, v in layout.offsets.items() if k >= 0}, lower_bound(bufs))
    head, name, order, offsets, bound = best
    return Plan(kernels.name, tflm.head, head, bound, lower_bound(base), name, order, offsets,
                tuple(tried), given.head)


def realise(info: ModelInfo, order: tuple[int, ...], offsets: dict[int, int],
            kernels: Kernels) -> int:
    """The head TFLM gives a model whose operators run in `order` with `offsets` offline, on
    `kernels` (a plan made for one build, checked on another)."""
    scratch = _scratch(info, kernels)
    return tflm_layout(buffers(info, order, scratch), offsets).head


def realise_bound(info: ModelInfo, order: tuple[int, ...], kernels: Kernels) -> int:
    """The lower bound of the head for operators run in `order` on `kernels`."""
    return lower_bound(buffers(info, order, _scratch(info, kernels)))


def operator_orders(info: ModelInfo) -> list[tuple[int, ...]]:
    """Other valid execution orders, for graphs that branch: each ready op chosen to keep the
    live bytes low (the op that frees the most, or allocates the least). Empty when the graph
    has one order only or holds ops whose order is state."""
    if any(op.op in _STATEFUL for op in info.ops) or any(t.is_variable for t in info.tensors):
        return []
    producers = {i: op.index for op in info.ops for i in op.outputs if i >= 0}
    deps = [{producers[i] for i in op.inputs if i in producers} for op in info.ops]
    users = Counter(k for d in deps for k in d)
    if all(users[k] <= 1 for k in range(len(info.ops))) and all(len(d) <= 1 for d in deps):
        return []  # a chain: one order only
    consumers: dict[int, list[int]] = {}
    for op in info.ops:
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(op.index)
    planned = set(planned_tensors(info))
    size = {i: aligned(tensor_bytes(info.tensors[i].shape, info.tensors[i].dtype))
            for i in planned}
    orders = []
    for rule in ("frees-most", "allocates-least"):
        order = _schedule(info, deps, consumers, size, rule)
        if order != tuple(range(len(info.ops))) and order not in orders:
            orders.append(order)
    return orders


def _schedule(info: ModelInfo, deps, consumers, size, rule: str) -> tuple[int, ...]:
    done: set[int] = set()
    order: list[int] = []
    keep = set(info.outputs)
    # The ready ops kept up to date as ops are done (was: every op re-tested at every step,
    # quadratic in the ops); min() below picks the same op (ties broken by index).
    dependents: list[list[int]] = [[] for _ in info.ops]
    for j, d in enumerate(deps):
        for k in d:
            dependents[k].append(j)
    waiting = [len(d) for d in deps]
    ready = {k for k in range(len(info.ops)) if not deps[k]}
    while len(order) < len(info.ops):

        def delta(k: int) -> tuple[int, int]:
            op = info.ops[k]
            alloc = sum(size.get(i, 0) for i in op.outputs if i >= 0)
            freed = sum(size.get(i, 0) for i in set(op.inputs) if i in size and i not in keep
                        and all(c in done or c == k for c in consumers.get(i, [])))
            return (alloc - freed, k) if rule == "frees-most" else (alloc, k)

        k = min(ready, key=delta)
        ready.discard(k)
        done.add(k)
        order.append(k)
        for j in dependents[k]:
            waiting[j] -= 1
            if not waiting[j]:
                ready.add(j)
    return tuple(order)
