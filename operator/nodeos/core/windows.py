"""Maintenance windows: is one open at ``now``, and when does the next one open. Pure.

Two forms (see ``MaintenanceWindow``): a five-field cron expression that opens the window plus a
duration, or weekdays with a start and end clock time (an end earlier than the start runs past
midnight). Both are evaluated in the window's IANA time zone.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Sequence

from nodeos.models.common import MaintenanceWindow, parse_duration

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NAMES = {name.lower(): index for index, name in enumerate(_DAYS)}
_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SEARCH_LIMIT = datetime.timedelta(days=366)


class WindowError(ValueError):
    """A window the schema let through but that cannot be evaluated (e.g. unknown zone)."""


def is_open(windows: Sequence[MaintenanceWindow], now: datetime.datetime) -> bool:
    """True when there are no windows, or ``now`` falls inside one of them."""
    return not windows or any(_open(window, now) for window in windows)


def next_opening(
    windows: Sequence[MaintenanceWindow], now: datetime.datetime
) -> datetime.datetime | None:
    """The earliest moment after ``now`` at which a window opens (None without windows)."""
    openings = [_next_start(window, now) for window in windows]
    found = [moment for moment in openings if moment is not None]
    return min(found) if found else None


def _zone(window: MaintenanceWindow) -> datetime.tzinfo:
    if window.time_zone in ("UTC", "Local"):
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(window.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"unknown time zone {window.time_zone!r}") from None


def _open(window: MaintenanceWindow, now: datetime.datetime) -> bool:
    local = now.astimezone(_zone(window))
    if window.schedule:
        length = parse_duration(window.duration or "0s")
        opened = _previous_cron(window.schedule, local, length)
        return opened is not None and local < opened + length
    start, end = _clock(window.start), _clock(window.end)
    days = {_NAMES[d.lower()] for d in window.days or ()}
    minutes = local.hour * 60 + local.minute
    if start < end:
        return local.weekday() in days and start <= minutes < end
    # Past midnight: open from start on a listed day until end on the following day.
    yesterday = (local.weekday() - 1) % 7
    return (local.weekday() in days and minutes >= start) or (yesterday in days and minutes < end)


def _next_start(window: MaintenanceWindow, now: datetime.datetime) -> datetime.datetime | None:
    local = now.astimezone(_zone(window)).replace(second=0, microsecond=0)
    moment = local + datetime.timedelta(minutes=1)
    limit = local + _SEARCH_LIMIT
    if window.schedule:
        fields = _parse_cron(window.schedule)
        while moment < limit:
            if _cron_matches(fields, moment):
                return moment.astimezone(datetime.UTC)
            moment += datetime.timedelta(minutes=1)
        return None
    days = {_NAMES[d.lower()] for d in window.days or ()}
    start = _clock(window.start)
    for offset in range(8):
        day = (local + datetime.timedelta(days=offset)).replace(hour=0, minute=0)
        candidate = day + datetime.timedelta(minutes=start)
        if candidate > local and candidate.weekday() in days:
            return candidate.astimezone(datetime.UTC)
    return None


def _previous_cron(
    schedule: str, local: datetime.datetime, length: datetime.timedelta
) -> datetime.datetime | None:
    """The latest cron firing within ``length`` before ``local`` (minute resolution)."""
    fields = _parse_cron(schedule)
    moment = local.replace(second=0, microsecond=0)
    earliest = local - length
    while moment > earliest:
        if _cron_matches(fields, moment):
            return moment
        moment -= datetime.timedelta(minutes=1)
    return None


def _clock(text: str | None) -> int:
    hours, minutes = (text or "00:00").split(":")
    return int(hours) * 60 + int(minutes)


_Fields = tuple[set[int], set[int], set[int], set[int], set[int], bool, bool]


def _parse_cron(schedule: str) -> _Fields:
    text = _MACROS.get(schedule.strip(), schedule)
    parts = text.split()
    if len(parts) != 5:
        raise WindowError(f"cron {schedule!r}: expected 5 fields")
    minute = _field(parts[0], 0, 59, {})
    hour = _field(parts[1], 0, 23, {})
    dom = _field(parts[2], 1, 31, {})
    month = _field(parts[3], 1, 12, _MONTHS)
    names = {name: (index + 1) % 7 for name, index in _NAMES.items()} | {"7": 0}
    dow = _field(parts[4], 0, 7, names)
    if 7 in dow:
        dow = (dow - {7}) | {0}
    return minute, hour, dom, month, dow, parts[2] in ("*", "?"), parts[4] in ("*", "?")


def _field(text: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _value(a, names), _value(b, names)
        else:
            first = _value(base, names)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high) or step < 1:
            raise WindowError(f"cron field {text!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        raise WindowError(f"cron value {text!r} is not a number or a known name") from None


def _cron_matches(fields: _Fields, moment: datetime.datetime) -> bool:
    minute, hour, dom, month, dow, any_dom, any_dow = fields
    if moment.minute not in minute or moment.hour not in hour or moment.month not in month:
        return False
    cron_weekday = (moment.weekday() + 1) % 7  # cron: Sunday = 0
    day_ok = moment.day in dom
    weekday_ok = cron_weekday in dow
    if any_dom and any_dow:
        return True
    if any_dom:
        return weekday_ok
    if any_dow:
        return day_ok
    return day_ok or weekday_ok
