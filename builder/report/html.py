"""The report as one self-contained HTML page (jinja2): figures inlined as SVG, styles and
the one small script inline, no network, no external font; light and dark by
`prefers-color-scheme`, readable on a phone and in print. The page's data is embedded as JSON
(`<script type="application/json" id="capsule-data">`), the same document `--json` prints."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import __version__
from builder.report.formats import TITLES, Rendered

if TYPE_CHECKING:
    from builder.records.report import ReportData
    from builder.report.figures import Figure, ImageKind

TEMPLATES = Path(__file__).parent / "templates"
# opens every folded <details> before printing, so paper shows what the screen folds
PRINT_SCRIPT = (
    'window.addEventListener("beforeprint",function(){'
    'document.querySelectorAll("details").forEach(function(d){d.open=true;});});'
)


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def metric_value(name: str, value: float | None) -> str:
    """An error rate as a percentage, anything else as a number."""
    return pct(value) if name.endswith("_error") else num(value)


def inline_svg(figure: Figure) -> str:
    """The SVG element alone (no XML prolog or DOCTYPE), labelled for screen readers."""
    text = figure.content.decode()
    text = text[text.index("<svg") :]
    label = figure.title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    width = re.search(r'<svg[^>]* width="([0-9.]+pt)"', text)
    natural = f' style="max-width: {width.group(1)}"' if width else ""  # never blown up
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}"{natural} ', 1)


def embedded_json(data: ReportData) -> str:
    """The data as JSON that cannot close its <script> element (<, > and & escaped as JSON
    unicode escapes, which every JSON reader reads back as the same characters)."""
    text = data.model_dump_json(indent=1)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


class HtmlFormat:
    name = "html"
    suffix = ".html"
    figures: ImageKind = "svg"

    def folders(self, page_name: str) -> list[str]:
        return []  # everything is inside the page

    def render(self, data: ReportData, figures: list[Figure], page_name: str) -> Rendered:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined

        env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters.update(pct=pct, num=num, seconds=seconds, metric=metric_value)
        by_section: dict[str, list[dict[str, Any]]] = {}
        for f in figures:
            by_section.setdefault(f.section, []).append(
                {"name": f.name, "title": f.title, "caption": f.caption, "svg": inline_svg(f)}
            )
        page = env.get_template("report.html.j2").render(
            d=data,
            c=data.capsule,
            figures=by_section,
            data_json=embedded_json(data),
            print_script=PRINT_SCRIPT,
            script_hash=script_hash(PRINT_SCRIPT),
            version=__version__,
            titles=TITLES,
            json=json,
        )
        return Rendered(page=page.encode(), beside={})


FORMAT = HtmlFormat()
