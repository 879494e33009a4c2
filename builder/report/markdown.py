"""The report as Markdown: the same sections as the HTML page, tables in GitHub's pipe syntax,
the figures as PNG files in a folder beside it (`NAME-files/`), with the page's data as
`capsule-data.json` there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from builder.report.formats import TITLES, Rendered
from builder.report.html import metric_value, num, pct, seconds

if TYPE_CHECKING:
    from builder.records.report import ReportData
    from builder.report.figures import Figure, ImageKind


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return [*lines, ""]


def folder_of(page_name: str) -> str:
    """The folder beside the page that holds its figures: report.md → report-files."""
    return page_name.rsplit(".", 1)[0] + "-files"


class MarkdownFormat:
    name = "md"
    suffix = ".md"
    figures: ImageKind = "png"

    def folders(self, page_name: str) -> list[str]:
        return [folder_of(page_name)]

    def render(self, data: ReportData, figures: list[Figure], page_name: str) -> Rendered:
        folder = folder_of(page_name)
        c = data.capsule
        out = [f"# Capsule report: {c.name}", ""]
        out += [c.description or "No description.", ""]
        if c.digest:
            out += [f"Digest: `sha256:{c.digest}`", ""]

        def section(name: str) -> None:
            out.extend([f"## {TITLES[name]}", ""])
            for f in figures:
                if f.section == name:
                    out.extend([f"![{f.title}]({folder}/{f.name}.png)", "", f"*{f.caption}*", ""])

        section("summary")
        out += _table(["metric", "final"], [[k, metric_value(k, v)] for k, v in c.final.items()])
        out += _table(
            ["fact", "value"],
            [
                ["frozen", f"`{c.path}`, {c.created}"],
                ["framework", f"{c.framework} {c.framework_version}, {c.python}"],
                ["device", f"{c.device}, {c.threads} thread(s), deterministic {c.deterministic}"],
                ["machine", ", ".join([f"{c.cpu_model} ({c.cores} cores)", *c.gpus, c.os])],
                ["seeds", f"init {c.seeds['init']}, order {c.seeds['order']}"],
                ["training", f"{c.epochs} epochs, {c.steps} steps, {seconds(c.train_seconds)}"],
            ],
        )
        for x in data.compared:
            out += [f"**{x.facts.label}** ({x.facts.kind}): **{x.verdict.verdict}**", ""]
            out += [f"- `{r.kind}` {r.message}" for r in x.verdict.reasons] + [""]
        if "environment" in data.sections:
            section("environment")
            for x in data.compared:
                differ = [r for r in x.environment if r.differs]
                out += [f"### baseline vs {x.facts.label}", ""]
                rows: list[list[object]] = [[r.group, r.field, r.baseline, r.other] for r in differ]
                out += (
                    _table(["group", "fact", "baseline", x.facts.label], rows)
                    if rows
                    else [f"No difference in the {len(x.environment)} facts recorded.", ""]
                )
                if differ:
                    out += [f"{len(x.environment) - len(differ)} other facts agree.", ""]
        if "curves" in data.sections:
            section("curves")
        if "drift" in data.sections:
            section("drift")
            for x in data.compared:
                rows = [
                    [
                        t.name,
                        "x".join(map(str, t.shape)),
                        num(t.max_abs, 3),
                        "—" if t.max_ulp is None else f"{t.max_ulp:.0f}",
                        t.equal,
                    ]
                    for t in x.verdict.tensors
                ]
                out += [f"### baseline vs {x.facts.label}", ""]
                out += _table(["tensor", "shape", "max |Δ|", "max ULP", "equal"], rows)
        if "variance" in data.sections and data.variance is not None:
            v = data.variance
            section("variance")
            seeds = f"{v.init_seeds} init seed(s), {v.order_seeds} order seed(s)"
            out += [f"{v.runs} runs over {seeds}.", ""]
            rows = [
                [
                    a.axis,
                    s.metric,
                    s.n,
                    metric_value(s.metric, s.min),
                    metric_value(s.metric, s.max),
                    metric_value(s.metric, s.mean),
                    metric_value(s.metric, s.std),
                    f"[{metric_value(s.metric, s.ci_low)}, {metric_value(s.metric, s.ci_high)}]",
                ]
                for a in v.axes
                for s in a.summaries
            ]
            out += _table(["over", "metric", "runs", "min", "max", "mean", "std", "95 % CI"], rows)
            rows = [
                [
                    t.label,
                    t.tost.metric,
                    metric_value(t.tost.metric, t.tost.value),
                    num(t.tost.p, 3),
                    "equivalent" if t.tost.equivalent else "not equivalent",
                ]
                for t in v.tests
            ]
            if rows:
                out += _table(["run", "metric", "value", "p (TOST)", "result"], rows)
        if "matrix" in data.sections:
            section("matrix")
            for m in data.matrices:
                rows = [
                    [
                        cell.trained_on,
                        cell.evaluated_on,
                        pct(cell.train_error),
                        pct(cell.dev_error),
                        pct(cell.eval_error),
                        [cell.trained_on, cell.evaluated_on] in m.identical_cells,
                    ]
                    for cell in m.record.cells
                ]
                out += [f"### `{m.path}`", ""] + ([m.note, ""] if m.note else [])
                head = ["trained on", "evaluated on", "train", "dev", "eval", "≡ baseline"]
                out += _table(head, rows)
        if "audits" in data.sections:
            section("audits")
            rows = [
                [
                    ", ".join(map(str, a.changes)),
                    a.verdict,
                    "not run" if a.bisect is None else ", ".join(a.bisect) or "none",
                ]
                for a in data.audits
            ]
            out += _table(["changes", "verdict", "bisection culprit"], rows)
        section("checklist")
        rows = [
            [("met" if i.met else "not met"), f"{i.source}: {i.item}", i.evidence]
            for i in data.checklist
        ]
        out += _table(["", "item", "evidence"], rows)
        out += [f"The page's data: [`{folder}/capsule-data.json`]({folder}/capsule-data.json)", ""]
        beside = {f"{folder}/{f.name}.png": f.content for f in figures}
        beside[f"{folder}/capsule-data.json"] = (data.model_dump_json(indent=1) + "\n").encode()
        return Rendered(page="\n".join(out).encode(), beside=beside)


FORMAT = MarkdownFormat()
