"""Writes README's generated tables (requests.csv columns, run.json keys) from the types.

    .venv/bin/python scripts/readme_tables.py          # rewrite README.md in place
    .venv/bin/python scripts/readme_tables.py --check  # exit 1 if README.md is stale

Each table sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->` markers;
tests/unit/test_readme_tables.py fails when README and the types disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from kvswarm.records import columns_markdown
from kvswarm.runrecord import run_record_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
TABLES: dict[str, Callable[[], str]] = {
    "requests.csv": columns_markdown,
    "run.json": run_record_markdown,
}


def with_tables(text: str) -> str:
    """README text with every generated table replaced by its current content."""
    for name, make in TABLES.items():
        pattern = re.compile(
            rf"(<!-- generated: {re.escape(name)} -->\n).*?(<!-- end: {re.escape(name)} -->)",
            re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"README.md has no <!-- generated: {name} --> block")
        text = text[: match.end(1)] + make() + text[match.start(2) :]
    return text


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    updated = with_tables(text)
    if "--check" in argv:
        return 0 if updated == text else 1
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
