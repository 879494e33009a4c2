"""The plug-in point for report page formats: a `ReportFormat` turns the page's data and its
drawn figures into files. Adding a format is one module in builder/report/ that defines
`FORMAT`, and one entry in `FORMATS` (and in `FormatChoice`, cli/common.py)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from builder.records.report import ReportData
    from builder.report.figures import Figure, ImageKind

# each format's module, imported only when that format is written
FORMATS: dict[str, str] = {"html": "builder.report.html", "md": "builder.report.markdown"}

TITLES = {  # each section's heading, in every format
    "summary": "Summary",
    "environment": "Environment side by side",
    "curves": "Training curves",
    "drift": "Per-layer drift",
    "variance": "Variance over seeds and orders",
    "matrix": "Cross-device matrix",
    "audits": "Upgrade audits",
    "checklist": "Reproducibility checklist",
}


@dataclass(frozen=True)
class Rendered:
    """What a format writes: the page itself, and files beside it (relative to the page's
    folder; the first part of each is one folder of the format's own, named after the page)."""

    page: bytes
    beside: dict[str, bytes]


class ReportFormat(Protocol):
    name: str  # the --format word
    suffix: str  # the page's usual file suffix
    figures: ImageKind  # how its figures are drawn: svg (inlined) or png (files)

    def folders(self, page_name: str) -> list[str]:
        """The folders it writes beside a page named `page_name` (refused if they exist)."""
        ...

    def render(self, data: ReportData, figures: list[Figure], page_name: str) -> Rendered:
        """The page for `data` with `figures`; `page_name` is the file's name, for links to
        files beside it."""
        ...


def get_format(name: str) -> ReportFormat:
    fmt: ReportFormat = import_module(FORMATS[name]).FORMAT
    return fmt
