from __future__ import annotations

from collections.abc import Callable

from nodeos.simulator.node import Faults, Power, SimulatedNode, Transition
from nodeos.simulator.server import NodeSpec, build_fleet


def test_addresses_stay_valid_past_255_nodes() -> None:
    fleet = build_fleet([NodeSpec(f"n-{i}") for i in range(600)], "v1.12.4", 1.0)
    addresses = [node.address for node in fleet.nodes.values()]
    assert addresses[0] == "127.0.0.10"
    assert addresses[246] == "127.0.1.0"
    assert len(set(addresses)) == 600


def test_a_reboot_installs_the_pending_version_and_changes_the_boot_id() -> None:
    clock = {"now": 0.0}
    fleet = build_fleet([NodeSpec("w")], "v1.12.4", reboot_seconds=2.0)
    fleet.clock = lambda: clock["now"]
    node = fleet.nodes["w"]
    before = node.boot_id
    node.install("ghcr.io/siderolabs/installer:v1.13.9")
    node.reboot(0.0)
    clock["now"] = 0.1
    assert [t.power for t in fleet.advance()] == [Power.REBOOTING]
    assert not node.answering()
    clock["now"] = 2.2
    assert [t.power for t in fleet.advance()] == [Power.RUNNING]
    assert node.version == "v1.13.9"
    assert node.boot_id != before


def test_faults_parse_from_the_command_line_form() -> None:
    faults = Faults.parse("install-fails=3,slow-reboot=20,boot-fallback")
    assert faults.install_exit_code == 3
    assert faults.reboot_seconds == 20
    assert faults.boot_fallback


def test_the_fleet_moves_along_a_try_revert_and_a_node_that_never_returns() -> None:
    clock = {"now": 0.0}
    specs = [NodeSpec("a"), NodeSpec("b", faults=Faults.parse("never-returns")), NodeSpec("c")]
    fleet = build_fleet(specs, "v1.12.4", reboot_seconds=2.0)
    fleet.clock = lambda: clock["now"]
    a, b = fleet.nodes["a"], fleet.nodes["b"]
    before = a.config
    a.apply_config(b"machine:\n  time: {}\n", "TRY", dry_run=False, now=0.0, try_seconds=5.0)
    b.reboot(0.0)
    clock["now"] = 1.0
    assert [(t.node, t.power) for t in fleet.advance()] == [("b", Power.DOWN)]
    assert a.config != before
    clock["now"] = 60.0
    assert fleet.advance() == []
    assert a.config == before, "the TRY configuration is reverted when due"
    assert b.power is Power.DOWN
    assert not any(node.timed() for node in fleet.nodes.values())


def test_a_fleet_of_thousands_advances_only_the_nodes_with_a_timer() -> None:
    visited: list[str] = []
    fleet = build_fleet([NodeSpec(f"n-{i}") for i in range(3000)], "v1.12.4", 1.0)
    fleet.clock = lambda: 0.1

    def counted(node: SimulatedNode) -> Callable[[float], Transition | None]:
        moved = node.advance

        def advance(now: float) -> Transition | None:
            visited.append(node.name)
            return moved(now)

        return advance

    for node in fleet.nodes.values():
        node.advance = counted(node)  # type: ignore[method-assign,assignment]
    fleet.nodes["n-7"].reboot(0.0)
    fleet.advance()
    fleet.advance()
    assert visited == ["n-7", "n-7"]
