"""Generated files match the models, the chart's CRDs are the same bytes, examples parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeos import codegen
from nodeos.models.nodeosconfig import NodeOSConfig
from nodeos.models.upgradeplan import UpgradePlan

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
KINDS: dict[str, Any] = {"UpgradePlan": UpgradePlan, "NodeOSConfig": NodeOSConfig}


@pytest.mark.parametrize("relative", sorted(codegen.generated_files()), ids=str)
def test_generated_file_is_up_to_date(relative: Path) -> None:
    on_disk = REPO / relative
    assert on_disk.exists(), f"{relative} is missing: run `make generate`"
    assert on_disk.read_text() == codegen.generated_files()[relative], (
        f"{relative} differs from the models: run `make generate`"
    )


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert codegen.main(["--root", str(tmp_path), "--check"]) == 1
    assert codegen.main(["--root", str(tmp_path)]) == 0
    assert codegen.main(["--root", str(tmp_path), "--check"]) == 0


def test_chart_crds_are_byte_copies_of_crds() -> None:
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert (REPO / "charts/nodeos/crds" / crd.name).read_bytes() == crd.read_bytes()


def test_crd_schemas_are_structural() -> None:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        text = path.read_text()
        for forbidden in ("$ref", "$defs", "title:", "additionalProperties: false"):
            assert forbidden not in text, f"{path.name} contains {forbidden}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_with_the_models(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    model = KINDS[document["kind"]].model_validate(document)
    assert model.to_api() == document
