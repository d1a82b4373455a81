"""The one shape reports take before they are written: a `Document` of sections holding
paragraphs, tables and charts, plus `data` (the numbers, for JSON).

Reports (`kvswarm.analysis.report`, `kvswarm.analysis.compare`) build a Document; each
report format (`kvswarm.analysis.formats`) writes any Document. Table cells are text
already formatted; the same numbers unformatted live in `data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chart", "Document", "Section", "Table", "cell", "share_cell"]


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Chart:
    """A PNG under the output directory (`path` relative to it)."""

    title: str
    path: str


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()


@dataclass(frozen=True)
class Document:
    """`name` is the file stem each format writes (`report`, `comparison`)."""

    name: str
    title: str
    intro: tuple[str, ...]
    sections: tuple[Section, ...]
    data: dict[str, Any] = field(default_factory=dict)


def cell(value: float | int | None, digits: int = 2) -> str:
    """A number as reports print it ("-" when missing)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def share_cell(value: float | None, digits: int = 1) -> str:
    """A share (0.65) as a percentage ("65.0%")."""
    return "-" if value is None else f"{value * 100:.{digits}f}%"
