"""Report formats, resolved by name through kvswarm's registry helper.

A format writes a `Document` into an output directory and returns the file it wrote.
Adding one is one module that registers a `ReportFormat` subclass in `FORMATS`; this
module imports the built-in ones (md, html, json) so their order is the order users see.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from kvswarm.analysis.document import Document
from kvswarm.registry import Registry

__all__ = ["FORMATS", "ReportFormat", "resolve_formats", "write_document"]


class ReportFormat:
    """Writes a Document as `<document.name>.<suffix>` under the output directory."""

    suffix: ClassVar[str] = ""

    def render(self, document: Document, out_dir: Path) -> str:
        raise NotImplementedError

    def write(self, document: Document, out_dir: Path) -> Path:
        path = out_dir / f"{document.name}.{self.suffix}"
        path.write_text(self.render(document, out_dir), encoding="utf-8")
        return path


FORMATS: Registry[type[ReportFormat]] = Registry("report format")

# The built-in formats register themselves on import (order = listing order).
from kvswarm.analysis import format_markdown, format_html, format_json  # noqa: E402, F401, I001


def resolve_formats(names: list[str], where: str = "--format") -> list[str]:
    """Format names with `both` (md and html) expanded, each checked against FORMATS."""
    resolved: list[str] = []
    for name in names:
        for part in ("md", "html") if name == "both" else (name,):
            FORMATS.get(part, where=where)
            if part not in resolved:
                resolved.append(part)
    return resolved


def write_document(document: Document, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write the document in each format; the files written, in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [FORMATS.get(name, where="--format")().write(document, out_dir) for name in formats]
