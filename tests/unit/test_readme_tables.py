"""README's requests.csv and run.json tables are generated from the column spec and the
run record types: they never drift apart."""

from __future__ import annotations

import importlib.util

from tests.support.processes import REPO


def load_script():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", REPO / "scripts/readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_types() -> None:
    script = load_script()
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert script.with_tables(text) == text, (
        "README.md's generated tables are stale: run .venv/bin/python scripts/readme_tables.py"
    )


def test_every_requests_csv_column_is_in_the_readme() -> None:
    from kvswarm.records import CSV_COLUMNS

    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in text for name in CSV_COLUMNS)
