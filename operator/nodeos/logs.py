"""How the operator logs: text for people, or JSON (one object per line) for log pipelines.

Records may carry ``plan``, ``node``, ``phase``, ``reason`` (pass them in ``extra``); both
formats show them as fields. Times are UTC, RFC 3339 with a ``Z``, as in the API objects.
"""

from __future__ import annotations

import datetime
import json
import logging

FIELDS = ("plan", "node", "config", "phase", "reason")


def configure(level: str, fmt: str) -> None:
    """Sets up the root logger (replacing any handler) for ``nodeos run``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_retried_is_a_warning)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf logs every handled event at INFO; plan progress has lines of its own.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _retried_is_a_warning(record: logging.LogRecord) -> bool:
    """Demotes to WARNING the API requests kopf logs as ERROR although it retries them.

    A 429 while the API server starts is one: nothing needs a person yet.
    """
    retried = record.name.startswith("kopf._cogs.clients") and "will retry" in record.getMessage()
    if record.levelno == logging.ERROR and retried:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _time(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, str]:
    return {key: str(getattr(record, key)) for key in FIELDS if getattr(record, key, None)}


class TextFormatter(logging.Formatter):
    """One line: time, level, logger, message, then ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a line (and its traceback, if any)."""
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_time(record)} {record.levelname} {record.name} {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        entry: dict[str, str] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)
