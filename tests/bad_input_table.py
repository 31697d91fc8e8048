"""Prints the bad-input campaign's table (tests/bad_input.py): entry point x input kind, with how many
cases each cell collects, as Markdown (docs/reliability.md holds the output).

    python tests/bad_input_table.py            # from the repository root

It collects the campaign's test modules (nothing runs) and sums the ``bad_input`` markers' cases.
"""
import collections
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bad_input  # noqa: E402

MODULES = ["test_bad_input_tensors.py", "test_bad_input_files.py", "test_bad_input_cli.py"]


class _Count:
    def __init__(self):
        self.cells = collections.Counter()

    def pytest_collection_modifyitems(self, items):
        for item in items:
            for mark in item.iter_markers("bad_input"):
                self.cells[mark.kwargs["entry"], mark.kwargs["kind"]] += mark.kwargs.get("cases", 1)


def main() -> int:
    count = _Count()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"] + [os.path.join(HERE, m) for m in MODULES],
                       plugins=[count])
    if code != 0:
        return int(code)
    kinds = [k for k in bad_input.KINDS if any(k == kind for _, kind in count.cells)]
    print("\n| entry point | " + " | ".join(kinds) + " | all |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for entry in bad_input.ENTRIES:
        row = [count.cells.get((entry, k), 0) for k in kinds]
        print(f"| {entry} | " + " | ".join(str(n) if n else "" for n in row) + f" | {sum(row)} |")
    print(f"\n{sum(count.cells.values())} cases in {len(count.cells)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
