"""The fault suite's size, per file, into docs/robustness.md (a count, generated, never typed).

    python -m benchmarks.fault_suite        # or: make fault-suite-count

It asks pytest which cases tests/faults/ holds (`--collect-only`, nothing runs) and writes a table
of the count per file into the `fault-suite` block of the page. tests/docs checks that the block
holds what a fresh collection counts, so the page cannot fall behind the suite.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.report import ROOT, add_arguments, command_line, markdown_table, write_block

PAGE = ROOT / "docs" / "robustness.md"
BLOCK = "fault-suite"


def counts() -> Counter:
    """{test file name: number of cases} of tests/faults/, as pytest collects them."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/faults"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    ids = [line for line in done.stdout.splitlines() if line.startswith("tests/faults/") and "::" in line]
    if done.returncode or not ids:
        raise SystemExit(f"fault_suite: error: pytest could not collect tests/faults:\n{done.stdout}{done.stderr}")
    return Counter(Path(i.split("::")[0]).name for i in ids)


def table(found: Counter) -> str:
    rows = [[f"`{name}`", n] for name, n in sorted(found.items())] + [["all", sum(found.values())]]
    return markdown_table(["file", "cases"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fault_suite", description=__doc__.split("\n")[0])
    add_arguments(parser, PAGE)
    args = parser.parse_args(argv)
    text = table(counts())
    print(text)
    if not args.no_write:
        write_block(args.page, BLOCK, text, command_line("benchmarks.fault_suite", argv or []))


if __name__ == "__main__":
    main()
