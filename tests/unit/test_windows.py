"""Maintenance windows on cron schedules and weekly clock times, across zones and DST."""

from __future__ import annotations

import datetime
import time
import zoneinfo
from typing import Any

import pytest
from pydantic import ValidationError

from nodeos.core import windows
from nodeos.models.common import MaintenanceWindow

UTC = datetime.UTC
# Sunday 29 November 2026, noon UTC
NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def window(**fields: Any) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(fields)


def weekdays(schedule: str, count: int = 14) -> set[str]:
    """The weekdays of the next ``count`` openings."""
    w = window(schedule=schedule, duration="1h")
    moment, days = NOW, set()
    for _ in range(count):
        found = windows.next_opening([w], moment)
        assert found is not None
        days.add(found.strftime("%a"))
        moment = found
    return days


EVERY_DAY = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}


@pytest.mark.parametrize(
    ("schedule", "days"),
    [
        ("0 2 * * 1-7", EVERY_DAY),
        ("0 2 * * 0-7", EVERY_DAY),
        ("0 2 * * 5-7", {"Fri", "Sat", "Sun"}),
        ("0 2 * * fri-sun", {"Fri", "Sat", "Sun"}),
        ("0 2 * * FRI-SUN", {"Fri", "Sat", "Sun"}),
        ("0 2 * * 7", {"Sun"}),
        ("0 2 * * 0", {"Sun"}),
        ("0 2 * * sat,sun", {"Sat", "Sun"}),
        ("0 2 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("@daily", EVERY_DAY),
    ],
)
def test_cron_weekdays_are_the_ones_written(schedule: str, days: set[str]) -> None:
    assert weekdays(schedule) == days


def test_a_leap_day_schedule_opens_on_the_next_leap_day_quickly(figures: list[str]) -> None:
    w = window(schedule="0 3 29 2 *", duration="2h")
    started = time.perf_counter()
    opening = windows.next_opening([w], NOW)
    is_open = windows.is_open([w], NOW)
    took_ms = (time.perf_counter() - started) * 1000
    assert opening == datetime.datetime(2028, 2, 29, 3, 0, tzinfo=UTC)
    assert not is_open
    figures.append(f"cron '0 3 29 2 *': next opening and is-open in {took_ms:.2f} ms")


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("0 2 * * 1 5", "should match pattern"),
        ("0 2 * * xyz", "0 2 * * xyz"),
    ],
)
def test_schedules_that_cannot_work_are_refused_naming_the_field(
    schedule: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        window(schedule=schedule, duration="1h")
    error = raised.value.errors()[0]
    assert error["loc"] == ("schedule",)
    assert problem in error["msg"]


def test_an_unknown_time_zone_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        window(schedule="0 2 * * *", duration="1h", timeZone="Mars/Olympus")
    error = raised.value.errors()[0]
    assert error["loc"] == ("timeZone",)
    assert "unknown time zone 'Mars/Olympus'" in error["msg"]


def test_zone_names_come_with_the_package() -> None:
    w = window(schedule="0 2 * * *", duration="1h", timeZone="US/Central")
    # 02:00 in Chicago (CST, UTC-6) is 08:00 UTC
    assert windows.next_opening([w], NOW) == datetime.datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def test_a_cron_window_is_open_for_its_duration_from_each_firing() -> None:
    w = window(schedule="30 11 * * *", duration="1h")
    assert windows.is_open([w], NOW)  # opened 11:30, closes 12:30
    assert windows.is_open([w], NOW.replace(hour=11, minute=30))  # at the firing itself
    assert not windows.is_open([w], NOW.replace(hour=12, minute=30))
    assert not windows.is_open([w], NOW.replace(hour=11, minute=29))


NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def test_spring_forward_a_firing_in_the_skipped_hour_opens_when_the_clocks_jump() -> None:
    # 8 March 2026: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    w = window(schedule="30 2 * * *", duration="1h", timeZone="America/New_York")
    before = datetime.datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)
    opening = windows.next_opening([w], before)
    assert opening is not None
    assert opening.astimezone(NEW_YORK) == datetime.datetime(2026, 3, 8, 3, 0, tzinfo=NEW_YORK)
    later = windows.next_opening([w], opening)
    assert later is not None
    assert later.astimezone(NEW_YORK).replace(tzinfo=None) == datetime.datetime(2026, 3, 9, 2, 30)


def test_fall_back_the_window_lasts_its_real_duration() -> None:
    # 1 November 2026: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    w = window(schedule="30 1 * * *", duration="30m", timeZone="America/New_York")
    first = datetime.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert windows.next_opening([w], first - datetime.timedelta(hours=1)) == first
    assert windows.is_open([w], first + datetime.timedelta(minutes=29))
    # an hour after the first 01:30 it is 01:30 EST: the window opens again, for 30 real minutes
    assert windows.is_open([w], first + datetime.timedelta(minutes=70))
    assert not windows.is_open([w], first + datetime.timedelta(minutes=95))


def test_weekly_windows_follow_local_time_across_dst() -> None:
    w = window(days=["Sun"], start="03:00", end="05:00", timeZone="America/New_York")
    # Sunday 8 March 2026 (spring forward): 03:00 EDT is 07:00 UTC
    saturday = datetime.datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    assert windows.next_opening([w], saturday) == datetime.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # Sunday 1 November 2026 (fall back): 03:00 EST is 08:00 UTC
    saturday = datetime.datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
    assert windows.next_opening([w], saturday) == datetime.datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert windows.is_open([w], datetime.datetime(2026, 11, 1, 9, 59, tzinfo=UTC))
    assert not windows.is_open([w], datetime.datetime(2026, 11, 1, 10, 0, tzinfo=UTC))


def test_a_weekly_window_past_midnight_is_open_the_next_morning() -> None:
    w = window(days=["Sat"], start="22:00", end="02:00")
    sunday_1am = datetime.datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    assert windows.is_open([w], sunday_1am)
    assert not windows.is_open([w], sunday_1am.replace(hour=2))
