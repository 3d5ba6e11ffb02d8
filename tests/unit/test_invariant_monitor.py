"""The invariant monitor places a journal call among watched changes by resourceVersion."""

from __future__ import annotations

from helpers.invariants import _cordoned_within

# cordoned at 10, uncordoned at 20, cordoned again at 30
HISTORY = [(5, False), (10, True), (20, False), (30, True)]


def test_a_call_inside_a_cordon_is_placed_as_cordoned() -> None:
    assert _cordoned_within(HISTORY, 12, 15)
    assert _cordoned_within(HISTORY, 31, None)


def test_a_window_that_reaches_into_a_cordon_gives_the_benefit_of_the_doubt() -> None:
    assert _cordoned_within(HISTORY, 8, 11)  # the cordon may have come first
    assert _cordoned_within(HISTORY, 18, 25)  # the uncordon may have come after


def test_a_call_between_cordons_is_a_breach_however_late_the_watch() -> None:
    assert not _cordoned_within(HISTORY, 21, 29)
    assert not _cordoned_within(HISTORY, 6, 9)
    assert not _cordoned_within([], 0, None)
