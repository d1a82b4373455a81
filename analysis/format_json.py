"""The `json` report format: the document's numbers (`data`) and its tables as text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kvswarm.analysis.document import Document
from kvswarm.analysis.formats import FORMATS, ReportFormat

__all__ = ["JsonReport"]


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@FORMATS.register_as("json")
class JsonReport(ReportFormat):
    suffix = "json"

    def render(self, document: Document, out_dir: Path) -> str:
        tables = [
            {"section": s.title, "title": t.title, "columns": list(t.columns),
             "rows": [list(r) for r in t.rows]}
            for s in document.sections for t in s.tables
        ]  # fmt: skip
        charts = [c.path for s in document.sections for c in s.charts]
        body = {"title": document.title, **document.data, "tables": tables, "charts": charts}
        return json.dumps(_plain(body), indent=2, allow_nan=False) + "\n"
