"""Health checks: a plan's CEL expressions over Kubernetes objects, and what their results mean.

Pure: the objects are read by the shell and handed in. Each check's expression is evaluated
once per object it selects, with the object bound to ``object`` (as in the API server's own
CEL rules), and holds only when it is true for every one of them. A check never passes by
default: no object matched, an evaluation error or a result that is not a boolean all count
as "cannot be evaluated", which holds the plan like a false check, with the cause named.

Expressions are compiled by the ``common-expression-language`` library (CEL's standard
definitions: ``has()``, ``all``/``exists``/``exists_one``/``map``/``filter``, ``size``,
``in``, ``startsWith``/``endsWith``/``contains``/``matches``), plus the Kubernetes string
extension functions users write most (``lowerAscii``, ``upperAscii``, ``trim``, ``split``,
``join``, ``replace``, ``indexOf``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel

from nodeos.models.rollout import HealthCheck


class CheckCompileError(ValueError):
    """The expression does not compile."""


@dataclass(frozen=True)
class Verdict:
    """One check's outcome: healthy, unhealthy (false), or not evaluable (``error``)."""

    healthy: bool
    message: str
    error: bool = False


def _split(text: str, separator: str) -> list[str]:
    return text.split(separator)


def _join(items: Sequence[str], separator: str = "") -> str:
    return separator.join(items)


def _replace(text: str, old: str, new: str) -> str:
    return text.replace(old, new)


def _index_of(text: str, part: str) -> int:
    return text.find(part)


_EXTENSIONS: Mapping[str, Any] = {
    "lowerAscii": str.lower,
    "upperAscii": str.upper,
    "trim": str.strip,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "indexOf": _index_of,
}


@functools.lru_cache(maxsize=256)
def compile_expression(expression: str) -> cel.Program:
    """The compiled program; ``CheckCompileError`` with the parser's message if it fails."""
    try:
        return cel.compile(expression)
    except (ValueError, RuntimeError) as error:
        raise CheckCompileError(_first_line(str(error))) from None


def label(index: int, check: HealthCheck) -> str:
    """How messages name a check: its position and description, else kind and name."""
    what = check.description or f"{check.kind} {check.name or '(by labels)'}"
    return f"healthChecks[{index}] ({what})"


def evaluate(index: int, check: HealthCheck, objects: Sequence[Mapping[str, Any]]) -> Verdict:
    """The check over the objects it selected (as the API returned them)."""
    name = label(index, check)
    if not objects:
        where = f" in namespace {check.namespace}" if check.namespace else ""
        return Verdict(False, f"{name}: no {check.kind} object matched{where}", error=True)
    try:
        program = compile_expression(check.expression)
    except CheckCompileError as error:
        return Verdict(False, f"{name}: expression does not compile: {error}", error=True)
    for item in objects:
        context = cel.Context()
        for function, impl in _EXTENSIONS.items():
            context.add_function(function, impl)
        context.add_variable("object", dict(item))
        who = _object_name(item)
        try:
            result = program.execute(context)
        except Exception as error:  # the library raises assorted built-in errors
            cause = f"no such key {error}" if isinstance(error, KeyError) else str(error)
            return Verdict(
                False, f"{name}: cannot evaluate on {who}: {_first_line(cause)}", error=True
            )
        if not isinstance(result, bool):
            return Verdict(
                False,
                f"{name}: on {who} the expression gave {result!r}, not true or false",
                error=True,
            )
        if not result:
            return Verdict(False, f"{name}: false for {who}: {check.expression}")
    return Verdict(True, f"{name}: true for {len(objects)} object(s)")


def applies(check: HealthCheck, moment: str) -> bool:
    """Whether ``check`` runs at ``moment`` (Before or After)."""
    return check.when in (moment, "Both")


def _object_name(item: Mapping[str, Any]) -> str:
    metadata = item.get("metadata") or {}
    name = metadata.get("name", "?")
    namespace = metadata.get("namespace")
    return (
        f"{item.get('kind', 'object')} {namespace}/{name}"
        if namespace
        else f"{item.get('kind', 'object')} {name}"
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
