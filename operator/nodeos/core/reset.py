"""What a spec change or a retry does to a plan's node records. Pure.

Records of nodes in flight stay: those nodes finish under the new spec. A record that failed
(in flight too: its worker was about to give the slot back, or the write that reset it earlier
did not reach the Node), that is pending, or that speaks of another target starts afresh. If
the node may still carry our cordon, the record goes back to Pending inside the in-flight
ledger, so its worker takes the cordon off (guarded by our mark) before the node is planned
again; otherwise the record is dropped and the planner sees the node as new. A Done record
never leaves our cordon behind (Done is reached by the uncordon): after a retarget, finished
nodes are planned again within the budget, not put in the ledger all at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nodeos.core.planner import FAILED, current
from nodeos.core.statemachine import replace
from nodeos.models.upgradeplan import NodeProgress


def after_change(
    nodes: Mapping[str, NodeProgress], in_flight: Sequence[str], target: str | None
) -> tuple[dict[str, NodeProgress], list[str]]:
    """The records and in-flight ledger once the plan's spec changed or it was retried."""
    records, ledger = dict(nodes), list(in_flight)
    for name, record in nodes.items():
        flying = name in in_flight
        if flying and record.phase not in FAILED:
            continue
        again = record.phase in FAILED or record.phase == "Pending"
        if not again and current(record, target, in_flight):
            continue
        if record.cordoned_by_us is not False and record.phase != "Done":
            records[name] = replace(
                record, phase="Pending", attempt=None, interrupted=None, retry_at=None
            )
            if not flying:
                ledger.append(name)
        else:
            del records[name]  # (one in flight: its worker finds no record and frees the slot)
    return records, ledger
