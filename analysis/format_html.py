"""The `html` report format: one self-contained page (charts embedded as base64 PNG, styles
inline, no script, nothing fetched), rendered with a Jinja2 template."""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from kvswarm.analysis.document import Document
from kvswarm.analysis.formats import FORMATS, ReportFormat

__all__ = ["HtmlReport"]

# Kept in the module so a plain (non-editable) install needs no package data.
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ document.title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
td.PASS { background: #d9f2d9; } td.FAIL { background: #f8d7d7; }
td.INCONCLUSIVE { background: #fff3cd; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.85em; }
</style>
</head>
<body>
<h1>{{ document.title }}</h1>
{% for p in document.intro %}<p>{{ p }}</p>
{% endfor %}
{% for section in document.sections %}
<h2>{{ section.title }}</h2>
{% for p in section.paragraphs %}<p>{{ p }}</p>
{% endfor %}
{% for table in section.tables %}
{% if table.title %}<h3>{{ table.title }}</h3>{% endif %}
<table>
<thead><tr>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr>{% for c in row %}
<td class="{{ c if c in verdicts else '' }}">{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% if table.note %}<p class="note">{{ table.note }}</p>{% endif %}
{% endfor %}
{% for chart in section.charts %}
<figure><img alt="{{ chart.title }}" src="data:image/png;base64,{{ images[chart.path] }}">
<figcaption>{{ chart.title }}</figcaption></figure>
{% endfor %}
{% endfor %}
</body>
</html>
"""
_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


@FORMATS.register_as("html")
class HtmlReport(ReportFormat):
    suffix = "html"

    def render(self, document: Document, out_dir: Path) -> str:
        images = {
            chart.path: base64.b64encode((out_dir / chart.path).read_bytes()).decode("ascii")
            for section in document.sections
            for chart in section.charts
        }
        return _ENVIRONMENT.from_string(TEMPLATE).render(
            document=document, images=images, verdicts={"PASS", "FAIL", "INCONCLUSIVE"}
        )
