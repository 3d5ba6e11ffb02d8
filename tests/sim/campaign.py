"""Runs many seeds of the engine simulation and prints seeds, violations and the time taken.

    PYTHONHASHSEED=0 python -m sim.campaign --seeds 1000 [--start 0] [--verbose]

(``make faults SEEDS=1000`` runs it.) Exits 1 when any seed breaks an invariant, after printing
each failing seed with its scenario and the last journal entries; one seed replays with
``--start SEED --seeds 1 --verbose``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from sim.scenario import Report, generate, simulate


def run(start: int, count: int, *, progress: bool = True) -> list[Report]:
    """Simulates seeds ``start`` .. ``start + count - 1``."""
    reports = []
    began = time.perf_counter()
    for seed in range(start, start + count):
        reports.append(simulate(generate(seed)))
        done = seed - start + 1
        if progress and (done % 50 == 0 or done == count):
            bad = sum(1 for r in reports if not r.ok)
            print(
                f"[faults] {done}/{count} seeds, {bad} with violations, "
                f"{time.perf_counter() - began:.0f}s",
                flush=True,
            )
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--verbose", action="store_true", help="print every seed's summary")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    began = time.perf_counter()
    reports = run(args.start, args.seeds)
    wall = time.perf_counter() - began
    failing = [r for r in reports if not r.ok]
    for report in reports:
        if args.verbose or not report.ok:
            print(
                f"seed {report.scenario.seed}: {report.phase}, {report.virtual_s:.0f}s virtual, "
                f"{report.wall_s:.2f}s wall, {report.entries} journal entries, "
                f"{report.incarnations} engine incarnation(s), "
                f"{len(report.violations)} violation(s)"
            )
        if not report.ok:
            print(report.explain(), "\n")
    phases: dict[str, int] = {}
    for report in reports:
        phases[report.phase] = phases.get(report.phase, 0) + 1
    virtual = sum(r.virtual_s for r in reports)
    print(
        f"[faults] {len(reports)} seeds from {args.start}: {len(failing)} with violations "
        f"({sum(len(r.violations) for r in failing)} in all); end phases {phases}; "
        f"{virtual / 3600:.1f} h simulated in {wall:.1f}s wall"
    )
    if failing:
        print("[faults] failing seeds:", " ".join(str(r.scenario.seed) for r in failing))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
