from __future__ import annotations

from nodeos.simulator.node import Faults, Power
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
