"""Shared by `test_concurrency` and its writer child: what writers append, and how readers check it.

A writer named ``NAME`` appends ``n`` events to workflow ``NAME``, alternating ten single
`append` calls and one `append_batch` of forty (more than the SQLite store writes in one
statement step, so a batch is written both in a multi-row step and row by row). Every
event's data records the writer (``w``), its index among the writer's events (``i``), its
append call (``call``), its index in that call (``k``) and the call's size (``n``), so a
reader can tell from the events alone which batch each belongs to and whether it sees it
whole.
"""

from __future__ import annotations

from stabilize_events import Event, EventType, SqliteEventStore

BATCH = 40
SINGLES_BETWEEN_BATCHES = 10


def append_plan(store: SqliteEventStore, name: str, n: int) -> list[Event]:
    """Append ``n`` events as writer ``name``; return them as stored, in append order."""
    stored: list[Event] = []
    call = 0
    while len(stored) < n:
        cycle = call % (SINGLES_BETWEEN_BATCHES + 1)
        size = min(BATCH, n - len(stored)) if cycle == SINGLES_BETWEEN_BATCHES else 1
        events = [
            Event(
                event_type=EventType.TASK_COMPLETED,
                entity_id=f"{name}-{len(stored) + k}",
                workflow_id=name,
                data={"w": name, "i": len(stored) + k, "call": call, "k": k, "n": size},
            )
            for k in range(size)
        ]
        if size == 1:
            stored.append(store.append(events[0]))
        else:
            stored.extend(store.append_batch(events))
        call += 1
    return stored


class StreamChecker:
    """Follows a reader's successive pages of the log (each starting after the last
    sequence it saw) and checks what a reader may rely on:

    - sequences continue without gaps from one page to the next;
    - a batch's events come together, in order, at consecutive sequences;
    - a page shorter than its limit reached the committed head, so it may not end
      inside a batch: a reader never sees the start of a batch without its end;
    - each writer's events come in the order it appended them.
    """

    def __init__(self) -> None:
        self.last = 0
        self.reads = 0
        self.head_reads_mid_run = 0  # pages that reached the head while writers were still going
        self.largest_batch = 0
        self._open: tuple[str, int, int, int] | None = None  # writer, call, next k, size
        self._next_i: dict[str, int] = {}

    def seen(self, writer: str) -> int:
        return self._next_i.get(writer, 0)

    def feed(self, events: list[Event], limit: int, writers_done: bool) -> None:
        self.reads += 1
        seqs = [e.sequence for e in events]
        assert seqs == list(range(self.last + 1, self.last + 1 + len(events))), (
            f"page after {self.last} has sequences {seqs[:5]}...: a gap or a reordering"
        )
        for e in events:
            d = e.data
            w, i, call, k, n = d["w"], d["i"], d["call"], d["k"], d["n"]
            assert i == self._next_i.get(w, 0), f"{w}: event {i} seen after {self._next_i.get(w, 0)} events"
            self._next_i[w] = i + 1
            if self._open is not None:
                ow, ocall, ok, on = self._open
                assert (w, call, k) == (ow, ocall, ok), (
                    f"sequence {e.sequence}: {w} call {call} event {k} inside {ow} call {ocall} "
                    f"(expected its event {ok} of {on})"
                )
            else:
                assert k == 0, f"sequence {e.sequence}: {w} call {call} seen from its event {k}, not 0"
            self._open = None if k == n - 1 else (w, call, k + 1, n)
            self.largest_batch = max(self.largest_batch, n)
        if seqs:
            self.last = seqs[-1]
        if len(events) < limit:
            assert self._open is None, (
                f"a page ended at the head (sequence {self.last}) inside a batch: {self._open}"
            )
            if not writers_done and events:
                self.head_reads_mid_run += 1
