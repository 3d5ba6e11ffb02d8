"""Building blocks shared by both custom resources: selectors, conditions, durations, windows.

Everything here is plain pydantic with camelCase aliases. Constraints that Kubernetes can check
at admission are written so they land in the generated OpenAPI schema (patterns, bounds, enums)
or as CEL rules (``x-kubernetes-validations``) attached with ``cel``.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from typing import Annotated, Any, Literal

import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

JsonDict = dict[str, JsonValue]

API_GROUP = "nodeos.dev"
API_VERSION = "v1alpha1"

GO_DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    Field(
        pattern=GO_DURATION_PATTERN,
        max_length=32,
        description="A duration such as 90s, 10m or 1h30m (units ms, s, m, h; never negative).",
    ),
]


def _count_or_percent(value: int | str) -> int | str:
    """The rule admission enforces with CEL, kept by the model too (specs may skip admission)."""
    if isinstance(value, int):
        ok = value >= 1
    else:
        ok = re.fullmatch(r"[0-9]+%", value) is not None and 1 <= int(value[:-1]) <= 100
    if not ok:
        raise ValueError("must be an integer of at least 1 or a percentage from 1% to 100%")
    return value


IntOrPercent = Annotated[
    int | str,
    AfterValidator(_count_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    ),
]

TIME_ZONE_PATTERN = r"^(UTC|Local|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2})$"


def _cron_field(value: str, any_day: bool = False) -> str:
    """A cron field whose numbers are in range: ``*``, values, ranges, steps and lists."""
    item = rf"(\*|{value}(-{value})?)(/[0-9]{{1,2}})?"
    return rf"({item}(,{item})*{'|[?]' if any_day else ''})"


_NAME = "[A-Za-z]{3}"  # month and weekday names; which ones exist is checked at apply
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    + " +".join(
        (
            _cron_field("[0-5]?[0-9]"),
            _cron_field("([01]?[0-9]|2[0-3])"),
            _cron_field("(0?[1-9]|[12][0-9]|3[01])", any_day=True),
            _cron_field(f"(0?[1-9]|1[0-2]|{_NAME})"),
            _cron_field(f"([0-7]|{_NAME})", any_day=True),
        )
    )
    + ")$"
)
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def parse_duration(text: str) -> datetime.timedelta:
    """Parses a Go-style duration (``1h30m``, ``90s``, ``250ms``) into a timedelta."""
    if not re.fullmatch(GO_DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    seconds = sum(
        float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
    )
    return datetime.timedelta(seconds=seconds)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL validation rule as Kubernetes expects it in ``x-kubernetes-validations``."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """Base for every API object part: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")


# Kubernetes label syntax: a value is empty or up to 63 of [A-Za-z0-9-_.] starting and ending
# alphanumeric; a key is such a name (non-empty) with an optional DNS-subdomain prefix and '/'.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LABEL_KEY_PATTERN = rf"^({_DNS_LABEL}([.]{_DNS_LABEL})*/)?{_LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label key (None when it is)."""
    prefix = key.rpartition("/")[0]
    if not re.fullmatch(LABEL_KEY_PATTERN, key) or len(prefix) > 253:
        return (
            f"{key!r} is not a valid label key: [prefix/]name, the name up to 63 characters "
            "of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


class LabelSelectorRequirement(ApiModel):
    """One match expression of a label selector."""

    key: str = Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = Field(default=None, max_length=64)


class LabelSelector(ApiModel):
    """A Kubernetes label selector (matchLabels and/or matchExpressions)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.matchExpressions) || self.matchExpressions.all(e, "
                    "(e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",
                    "matchExpressions: In and NotIn need values; Exists and DoesNotExist take none",
                ),
                cel(
                    "!has(self.matchLabels) || self.matchLabels.all(k, size(k) <= 317 && "
                    f"k.matches('{LABEL_KEY_PATTERN}'))",
                    "matchLabels: every key must be a valid label key ([prefix/]name; the name "
                    "up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter "
                    "or digit)",
                    ".matchLabels",
                ),
            ]
        }
    )

    match_labels: dict[str, LabelValue] | None = Field(default=None, max_length=64)

    def to_query(self) -> str:
        """The selector in the API's ``labelSelector`` query syntax."""
        terms = [f"{key}={value}" for key, value in sorted((self.match_labels or {}).items())]
        for e in self.match_expressions or []:
            values = ",".join(e.values or [])
            terms.append(
                {
                    "In": f"{e.key} in ({values})",
                    "NotIn": f"{e.key} notin ({values})",
                    "Exists": e.key,
                    "DoesNotExist": f"!{e.key}",
                }[e.operator]
            )
        return ",".join(terms)

    @field_validator("match_labels")
    @classmethod
    def _keys_valid(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        for key in labels or {}:
            problem = label_key_problem(key)
            if problem is not None:
                raise ValueError(problem)
        return labels

    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


NON_EMPTY_SELECTOR_RULE = cel(
    "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
    "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
    "nodeSelector must not be empty: an empty selector would select every node. "
    "To target all nodes on purpose, use matchExpressions "
    "[{key: kubernetes.io/os, operator: In, values: [linux]}]",
)


class Condition(ApiModel):
    """A standard Kubernetes condition."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime.datetime
    observed_generation: int | None = Field(default=None, ge=0)


class MaintenanceWindow(ApiModel):
    """When new nodes may start. Nodes already in flight finish outside a window.

    Either ``schedule`` + ``duration`` (cron form) or ``days`` + ``start`` + ``end`` (weekly
    form), each in ``timeZone``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.schedule) != has(self.days)",
                    "a maintenance window is either schedule + duration or days + start + end, "
                    "not both and not neither",
                ),
                cel(
                    "!has(self.schedule) || has(self.duration)",
                    "duration is required with schedule",
                    ".duration",
                ),
                cel(
                    "!has(self.days) || (has(self.start) && has(self.end))",
                    "start and end are required with days",
                    ".days",
                ),
                cel(
                    "!has(self.start) || !has(self.end) || self.start != self.end",
                    "start and end must differ (a window of zero length never opens)",
                    ".end",
                ),
            ]
        }
    )

    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        max_length=128,
        description="Five-field cron expression (minute hour day-of-month month day-of-week) "
        "at which the window opens, e.g. '0 2 * * 6'.",
    )
    duration: Duration | None = Field(default=None, description="How long a cron window lasts.")
    days: list[Weekday] | None = Field(
        default=None, min_length=1, max_length=7, description="Days of the week the window opens."
    )
    start: str | None = Field(default=None, pattern=CLOCK_PATTERN, description="HH:MM, 24 h.")
    end: str | None = Field(
        default=None,
        pattern=CLOCK_PATTERN,
        description="HH:MM, 24 h; earlier than start means the window ends the next day.",
    )
    time_zone: str = Field(
        default="UTC",
        pattern=TIME_ZONE_PATTERN,
        max_length=64,
        description="IANA time zone name, e.g. Europe/Berlin.",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule_fires(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            cron_next(schedule, _EPOCH)  # raises ValueError naming what is wrong
        return schedule

    @field_validator("time_zone")
    @classmethod
    def _zone_known(cls, name: str) -> str:
        time_zone(name)
        return name


_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def time_zone(name: str) -> datetime.tzinfo:
    """The IANA zone ``name`` (the ``tzdata`` package ships them); ValueError if unknown."""
    if name in ("UTC", "Local"):
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def cron_next(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first firing of ``schedule`` strictly after ``after`` (in ``after``'s zone).

    ValueError when the expression does not parse or never fires (e.g. 30 February).
    """
    return _cron(schedule, after, forward=True)


def _cron(schedule: str, start: datetime.datetime, *, forward: bool) -> datetime.datetime:
    text = schedule.strip()
    if not text.startswith("@") and len(text.split()) != 5:
        raise ValueError(f"cron {schedule!r}: expected 5 fields (minute hour day month weekday)")
    try:
        found = croniter.croniter(text, start)
        moment = found.get_next(datetime.datetime) if forward else found.get_prev(datetime.datetime)
    except croniter.CroniterBadDateError:
        raise ValueError(f"cron {schedule!r} never fires (no such date)") from None
    except (croniter.CroniterBadCronError, ValueError, KeyError) as error:
        raise ValueError(f"cron {schedule!r}: {error}") from None
    return moment


class SecretKeyReference(ApiModel):
    """A key of a Secret in a namespace."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    key: str = Field(default="config", min_length=1, max_length=253)
