"""What a CRD needs beyond the schema: names, short names and printer columns of a kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrinterColumn:
    """One ``kubectl get`` column."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdInfo:
    """Names and columns of a cluster-scoped kind in the nodeos.dev group."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
