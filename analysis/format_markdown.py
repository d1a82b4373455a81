"""The `md` report format: GitHub-flavoured Markdown, charts linked as relative PNGs."""

from __future__ import annotations

from pathlib import Path

from kvswarm.analysis.document import Document, Table
from kvswarm.analysis.formats import FORMATS, ReportFormat

__all__ = ["MarkdownReport", "markdown_table"]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(_escape(c) for c in table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return [*lines, ""]


@FORMATS.register_as("md")
class MarkdownReport(ReportFormat):
    suffix = "md"

    def render(self, document: Document, out_dir: Path) -> str:
        lines = [f"# {document.title}", "", *(f"{p}\n" for p in document.intro)]
        for section in document.sections:
            lines += [f"## {section.title}", ""]
            lines += [f"{p}\n" for p in section.paragraphs]
            for table in section.tables:
                lines += markdown_table(table)
            lines += [f"![{chart.title}]({chart.path})\n" for chart in section.charts]
        return "\n".join(lines).rstrip() + "\n"
