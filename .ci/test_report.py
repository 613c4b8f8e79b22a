"""Prints where the suite's time went, from the reports `make test` writes under build/test-reports/.

Each pytest run there leaves ``<run>.xml`` (JUnit) and ``<run>-durations.tsv`` (every test phase's seconds,
tests/conftest.py). This prints each run's wall-clock time and test count, then the slowest test phases of all runs.

    python3 .ci/test_report.py [--top 25] [build/test-reports]

Standard library only: CI runs it with any Python 3, after a failing run too.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "build" / "test-reports"


def run_totals(xml: Path) -> tuple[float, int, int, int]:
    """(wall-clock seconds, tests, failures + errors, skipped) of one JUnit file."""
    root = ElementTree.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = lambda key: sum(float(suite.get(key, 0)) for suite in suites)  # noqa: E731
    return total("time"), int(total("tests")), int(total("failures") + total("errors")), int(total("skipped"))


def slowest(folder: Path, top: int) -> list[tuple[float, str, str, str, str]]:
    """The ``top`` slowest (seconds, run, phase, outcome, test) over every durations report in ``folder``."""
    rows = []
    for report in sorted(folder.glob("*-durations.tsv")):
        run = report.name[: -len("-durations.tsv")]
        for line in report.read_text().splitlines()[1:]:
            seconds, phase, outcome, test = line.split("\t", 3)
            rows.append((float(seconds), run, phase, outcome, test))
    return sorted(rows, key=lambda row: -row[0])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=REPORTS)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    xmls = sorted(args.folder.glob("*.xml"))
    if not xmls:
        print(f"no test reports in {args.folder} (make test writes them)")
        return 1
    print(f"test reports in {args.folder}:")
    for xml in xmls:
        seconds, tests, failed, skipped = run_totals(xml)
        print(f"  {xml.stem:<10} {seconds / 60:6.1f} min  {tests} tests, {failed} failed, {skipped} skipped")
    print(f"the {args.top} slowest test phases:")
    for seconds, run, phase, outcome, test in slowest(args.folder, args.top):
        print(f"  {seconds:8.1f} s  {run:<8} {phase:<8} {outcome:<7} {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
