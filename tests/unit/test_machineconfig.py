from __future__ import annotations

import pytest
import yaml

from nodeos.core.machineconfig import PatchError, apply_patches, config_hash, drifted

BASE = b"machine:\n  type: worker\n  sysctls:\n    a: '1'\n  certSANs: [x]\n"


def test_patches_merge_mappings_and_replace_lists() -> None:
    patched = yaml.safe_load(
        apply_patches(BASE, ["machine:\n  sysctls:\n    b: '2'\n  certSANs: [y]\n"])
    )
    assert patched["machine"]["sysctls"] == {"a": "1", "b": "2"}
    assert patched["machine"]["certSANs"] == ["y"]
    assert patched["machine"]["type"] == "worker"


def test_null_deletes_a_key_and_patches_apply_in_order() -> None:
    patched = yaml.safe_load(
        apply_patches(BASE, ["machine:\n  sysctls: null\n", "machine:\n  sysctls:\n    c: '3'\n"])
    )
    assert patched["machine"]["sysctls"] == {"c": "3"}


def test_drift_is_whether_the_patches_would_change_anything() -> None:
    patch = "machine:\n  sysctls:\n    a: '1'\n"
    assert not drifted(BASE, [patch])
    assert drifted(BASE, ["machine:\n  sysctls:\n    a: '2'\n"])
    assert not drifted(
        apply_patches(BASE, ["machine:\n  time: {disabled: true}\n"]),
        ["machine:\n  time: {disabled: true}\n"],
    )


def test_hash_ignores_key_order_and_formatting() -> None:
    assert config_hash(b"a: 1\nb: 2\n") == config_hash(b"{b: 2, a: 1}")


@pytest.mark.parametrize(
    ("patch", "message"),
    [("- a\n- b\n", "patches[0] must be a YAML mapping"), ("a: [", "patches[0] is not valid YAML")],
)
def test_bad_patches_are_named(patch: str, message: str) -> None:
    with pytest.raises(PatchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_patches(BASE, [patch])
