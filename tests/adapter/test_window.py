"""The learned concurrency of a destination (Postfix's scheduler feedback): starts at 5,
grows with deliveries up to 20, falls with sessions the destination failed, never below 1."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from mxsend.twisted._routes import INITIAL_CONCURRENCY, MAX_CONCURRENCY, RouteState, Window


def test_it_starts_at_five_and_queues_the_rest_in_turn() -> None:
    window = Window()
    waits = [window.acquire() for _ in range(7)]
    assert [w.called for w in waits] == [True] * INITIAL_CONCURRENCY + [False, False]
    window.release(delivered=0, failed=False)  # a session ended: the sixth goes
    assert [w.called for w in waits[5:]] == [True, False]


def test_deliveries_raise_it_by_one_per_round_up_to_twenty() -> None:
    window = Window()
    for _ in range(INITIAL_CONCURRENCY):
        window.acquire()
    window.release(delivered=6, failed=False)  # about 1/5 each: one more session
    assert int(window.limit) == INITIAL_CONCURRENCY + 1
    waits = [window.acquire() for _ in range(3)]
    assert [w.called for w in waits] == [True, True, False]  # 4 held + 2 = 6
    window.release(delivered=10_000, failed=False)
    assert window.limit == MAX_CONCURRENCY
    assert waits[2].called


def test_a_failed_session_lowers_it_but_never_below_one() -> None:
    window = Window()
    held = [window.acquire() for _ in range(INITIAL_CONCURRENCY)]
    assert all(h.called for h in held)
    for _ in range(INITIAL_CONCURRENCY):
        window.release(delivered=0, failed=True)
    assert window.limit == 1.0
    first, second = window.acquire(), window.acquire()
    assert first.called and not second.called
    window.release(delivered=0, failed=True)
    assert second.called and window.limit == 1.0


def test_a_cancelled_wait_leaves_the_line() -> None:
    window = Window(initial=1)
    window.acquire()
    waiting = window.acquire()
    errors: list[object] = []
    waiting.addErrback(lambda f: errors.append(f.check(CancelledError)))
    waiting.cancel()
    window.release(delivered=0, failed=False)
    assert errors == [CancelledError] and window.active == 0 and window.idle()


def test_windows_are_kept_per_destination_and_idle_ones_swept() -> None:
    state = RouteState(reactor=Clock())
    a = state.window("a.test")
    assert state.window("a.test") is a and state.window("b.test") is not a
    for n in range(3000):  # idle windows do not pile up
        state.window(f"d{n}.test")
    assert len(state._windows) <= 2 * 1024
