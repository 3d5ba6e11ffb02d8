"""Maintenance windows: is one open at ``now``, and when does the next one open. Pure.

Two forms (see ``MaintenanceWindow``): a five-field cron expression that opens the window plus a
duration, or weekdays with a start and end clock time (an end earlier than the start runs past
midnight). Both are evaluated in the window's IANA time zone. Cron expressions are evaluated by
``croniter`` (names, ranges such as ``1-7`` or ``fri-sun``, steps, lists and the @ macros), a
firing at a local time that does not exist (spring forward) happens when the clocks jump, and
one that exists twice (fall back) opens the window at both; the window's duration is real
elapsed time.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from nodeos.models.common import (
    MaintenanceWindow,
    cron_next,
    parse_duration,
    time_zone,
)

_NAMES = {
    name.lower(): index
    for index, name in enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
}


class WindowError(ValueError):
    """A window that cannot be evaluated (unknown zone, bad cron) or that can never open."""


def is_open(windows: Sequence[MaintenanceWindow], now: datetime.datetime) -> bool:
    """True when there are no windows, or ``now`` falls inside one of them."""
    return not windows or any(_open(window, now) for window in windows)


def next_opening(
    windows: Sequence[MaintenanceWindow], now: datetime.datetime
) -> datetime.datetime | None:
    """The earliest moment after ``now`` at which a window opens (None without windows)."""
    openings = [_next_start(window, now) for window in windows]
    return min(openings) if openings else None


def _zone(window: MaintenanceWindow) -> datetime.tzinfo:
    try:
        return time_zone(window.time_zone)
    except ValueError as error:
        raise WindowError(str(error)) from None


def _open(window: MaintenanceWindow, now: datetime.datetime) -> bool:
    local = now.astimezone(_zone(window))
    if window.schedule:
        length = parse_duration(window.duration or "0s")
        # open when it fired within the last ``length`` (found forwards, as next_opening does)
        since = (now - length).astimezone(local.tzinfo)
        try:
            fired = cron_next(window.schedule, since)
        except ValueError as error:
            raise WindowError(str(error)) from None
        return fired <= now and length > datetime.timedelta(0)
    start, end = _clock(window.start), _clock(window.end)
    days = {_NAMES[d.lower()] for d in window.days or ()}
    minutes = local.hour * 60 + local.minute
    if start < end:
        return local.weekday() in days and start <= minutes < end
    # Past midnight: open from start on a listed day until end on the following day.
    yesterday = (local.weekday() - 1) % 7
    return (local.weekday() in days and minutes >= start) or (yesterday in days and minutes < end)


def _next_start(window: MaintenanceWindow, now: datetime.datetime) -> datetime.datetime:
    local = now.astimezone(_zone(window))
    if window.schedule:
        try:
            return cron_next(window.schedule, local).astimezone(datetime.UTC)
        except ValueError as error:
            raise WindowError(str(error)) from None
    days = {_NAMES[d.lower()] for d in window.days or ()}
    start = _clock(window.start)
    for offset in range(8):
        day = (local + datetime.timedelta(days=offset)).replace(
            hour=start // 60, minute=start % 60, second=0, microsecond=0
        )
        if day > local and day.weekday() in days:
            return day.astimezone(datetime.UTC)
    raise WindowError("a weekly window without days never opens")


def _clock(text: str | None) -> int:
    hours, minutes = (text or "00:00").split(":")
    return int(hours) * 60 + int(minutes)
