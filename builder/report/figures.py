"""The report's figures, drawn with matplotlib (Agg) from the page's data alone.

One function per figure kind; each returns matplotlib Figures, `draw` saves them as SVG (the
HTML page inlines them) or PNG (Markdown puts them beside the file). SVG output is
deterministic: a fixed `svg.hashsalt` per figure (the ids differ between figures, which share
one HTML document) and no date. In SVG the text and axes are drawn in a placeholder colour
that becomes `currentColor`, so the page's light or dark theme colours them.

matplotlib is imported here only, when a report is drawn: `capsule --help` must not pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

from builder.records.report import Curve, MatrixStudy, ReportData, Variance

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as Canvas

ImageKind = Literal["svg", "png"]
INK = "#010203"  # placeholder for text and axes: currentColor in SVG, dark grey in PNG
PNG_INK = "#1f2328"
PALETTE = ("#2f6fd6", "#e8710a", "#14a05a", "#d6336c", "#8e44ad", "#0f9fb1", "#b8860b")
NEUTRAL = "#7d8ba1"  # the sweep's own runs and interval: no run's colour
WIDTH, HEIGHT = 6.4, 3.4  # inches; the page scales them to its width
CHAR = 0.085  # inches: the width of a tick label's character, at most, at font.size
Points = Sequence[Sequence[tuple[float, float]]]  # one (x, y) series per curve


@dataclass(frozen=True)
class Figure:
    """One drawn figure: its file stem, its section, words for its caption and alt text."""

    name: str
    section: str
    title: str
    caption: str
    media_type: str
    content: bytes


def colour(index: int) -> str:
    """The colour of the baseline (0) and of each compared run (1, 2, …), the same in every
    figure."""
    return PALETTE[index % len(PALETTE)]


def _rc(kind: ImageKind) -> dict[Any, Any]:
    ink = INK if kind == "svg" else PNG_INK
    return {
        "svg.hashsalt": "capsule-report",
        "svg.fonttype": "path",  # glyphs as paths: no font is needed to read the figure
        "font.family": "DejaVu Sans",
        "font.size": 10.5,
        "text.color": ink,
        "axes.labelcolor": ink,
        "axes.edgecolor": ink,
        "axes.titlesize": 11.5,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": ink,
        "grid.alpha": 0.12,
        "xtick.color": ink,
        "ytick.color": ink,
        "legend.frameon": False,
        "legend.fontsize": 9,
        "figure.facecolor": "none" if kind == "svg" else "white",
        "axes.facecolor": "none" if kind == "svg" else "white",
        "savefig.facecolor": "none" if kind == "svg" else "white",
        "path.simplify": True,
    }


def _new(
    width: float = WIDTH,
    height: float = HEIGHT,
    left: float = 0.7,
    right: float = 0.2,
    top: float = 0.4,
    bottom: float = 0.55,
) -> tuple[Canvas, Axes]:
    """A figure with one axes at fixed margins (inches). Fixed margins, not constrained
    layout: the layout engine measures every label again and again, and took more than half
    of a report's drawing time."""
    from matplotlib.figure import Figure as Canvas

    canvas = Canvas(figsize=(width, height))
    box = (left / width, bottom / height, 1 - (left + right) / width, 1 - (top + bottom) / height)
    return canvas, canvas.add_axes(box)


def _short(label: str, size: int = 22) -> str:
    """A legend's label: a long directory name would push the plot aside."""
    return label if len(label) <= size else label[: size - 1] + "…"


def _save(canvas: Canvas, kind: ImageKind) -> bytes:
    buffer = io.BytesIO()
    if kind == "svg":
        canvas.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue().replace(INK.encode(), b"currentColor")
    canvas.savefig(buffer, format="png", dpi=144, metadata={"Software": None})
    return buffer.getvalue()


def _percent_text(value: float) -> str:
    return f"{100 * value:.3f} %"


def _number_text(value: float) -> str:
    return f"{value:.4g}"


def _percent(axes: Axes, which: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    axis = axes.yaxis if which == "y" else axes.xaxis
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.4g}%"))


# ---------------------------------------------------------------- training curves


def _divergence(axes: Axes, curves: list[Curve], per_step: bool) -> None:
    """A vertical line where each compared run's trace first differs from the baseline's."""
    for index, c in enumerate(curves):
        step = c.first_divergent_step
        if step is None or index == 0:
            continue
        x = step if per_step else (step / c.steps_per_epoch if c.steps_per_epoch else None)
        if x is None:
            continue
        axes.axvline(x, color=colour(index), linestyle=":", linewidth=1.2)
        axes.annotate(
            f"{c.label}: first divergent step {step}",
            xy=(x, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, 4 + 12 * (index - 1)),
            textcoords="offset points",
            fontsize=8.5,
            color=colour(index),
            va="bottom",
        )


def _series(axes: Axes, curves: list[Curve], points: Points) -> None:
    for index, (c, xy) in enumerate(zip(curves, points, strict=True)):
        if not xy:
            continue
        xs, ys = zip(*xy, strict=True)
        baseline = index == 0
        axes.plot(
            xs,
            ys,
            color=colour(index),
            linewidth=2.2 if baseline else 1.3,
            linestyle="-" if baseline else "--",
            marker=None if len(xs) > 30 else "o",
            markersize=3 if baseline else 2.5,
            label=_short(c.label),
        )


def curve_figures(curves: list[Curve]) -> Iterator[tuple[str, str, str, Canvas]]:
    """Loss and error per epoch (built-in experiments) or each logged metric (user code),
    and the batch loss at the trace's checkpoints; baseline solid, compared runs dashed, the
    first divergent checkpoint of each marked."""
    baseline = curves[0]
    panels: list[tuple[str, str, str, Points, bool]] = []
    if baseline.epochs:
        error = next(
            (m for m in ("eval_error", "dev_error") if getattr(baseline.epochs[0], m) is not None),
            "train_error",
        )
        loss = [[(e.epoch, e.train_loss) for e in c.epochs] for c in curves]
        errors = [
            [(e.epoch, v) for e in c.epochs if (v := getattr(e, error)) is not None] for c in curves
        ]
        panels.append(("curves-loss", "Training loss per epoch", "epoch", loss, False))
        panels.append(
            (f"curves-{error}", f"{error.replace('_', ' ')} per epoch", "epoch", errors, False)
        )
    for name in list(baseline.metrics)[:4]:
        series = [
            [
                (i if p.step is None else p.step, p.value)
                for i, p in enumerate(c.metrics.get(name, []))
            ]
            for c in curves
        ]
        panels.append((f"curves-{name}", f"{name} (logged)", "step", series, True))
    if baseline.trace:
        trace = [[(p.step, p.loss) for p in c.trace] for c in curves]
        title = "Batch loss at the trace's checkpoints"
        panels.append(("curves-trace", title, "step", trace, True))
    from matplotlib.ticker import MaxNLocator

    for name, title, xlabel, points, per_step in panels:
        canvas, axes = _new()
        _series(axes, curves, points)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if "error" in name:
            _percent(axes)
        _divergence(axes, curves, per_step)
        axes.set_title(title, loc="left")
        axes.set_xlabel(xlabel)
        axes.legend(loc="upper right")
        others = len(curves) - 1
        caption = f"{title}: " + (
            f"baseline (solid) and {others} compared run(s) (dashed)" if others else "baseline"
        )
        yield name, title, caption, canvas


# ---------------------------------------------------------------- per-layer drift


def drift_figures(data: ReportData) -> Iterator[tuple[str, str, str, Canvas]]:
    """max |Δ| and max ULP per weight tensor for every compared run, on log scales; a
    bit-identical tensor (0) is drawn at the axis floor and labelled."""
    compared = [c for c in data.compared if c.verdict.tensors]
    names = sorted({t.name for c in compared for t in c.verdict.tensors})
    for field, title, name in (
        ("max_abs", "Per-layer drift: max |Δ| per tensor", "drift-abs"),
        ("max_ulp", "Per-layer drift: max ULP per tensor", "drift-ulp"),
    ):
        values = [{t.name: getattr(t, field) for t in c.verdict.tensors} for c in compared]
        positive = [v for row in values for v in row.values() if v]
        floor = min(positive) / 10 if positive else (1e-9 if field == "max_abs" else 0.1)
        top = max(positive) * 10 if positive else floor * 1e4
        longest = max((len(n) for n in names), default=4)
        height = max(2.2, 0.32 * len(names) * max(1, len(compared)) + 1.0)
        canvas, axes = _new(WIDTH, height, left=0.3 + CHAR * longest)
        height = 0.8 / max(1, len(compared))  # of one tensor's row
        for index, (c, row) in enumerate(zip(compared, values, strict=True)):
            for position, tensor in enumerate(names):
                value = row.get(tensor)
                y = position + (index - (len(compared) - 1) / 2) * height
                if value:
                    axes.barh(
                        y,
                        value - floor,
                        left=floor,
                        height=height * 0.9,
                        color=colour(index + 1),
                        label=_short(c.facts.label) if position == 0 else None,
                    )
                    continue
                words = (
                    "shape differs"
                    if value is None and tensor in row
                    else ("absent" if tensor not in row else "0: bit-identical")
                )
                axes.plot(
                    [floor],
                    [y],
                    marker="|",
                    markersize=8,
                    color=colour(index + 1),
                    label=_short(c.facts.label) if position == 0 else None,
                )
                axes.annotate(
                    words,
                    xy=(floor, y),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8.5,
                    color=colour(index + 1),
                )
        axes.set_xscale("log")
        axes.set_xlim(floor, top)
        axes.set_yticks(range(len(names)), names)
        axes.invert_yaxis()
        axes.set_title(title, loc="left")
        axes.set_xlabel("max |Δ| (log)" if field == "max_abs" else "max ULP (log)")
        if len(compared) > 1:
            axes.legend(loc="lower right")
        caption = f"{title}, log scale, for {', '.join(c.facts.label for c in compared)}"
        yield name, title, caption, canvas


# ---------------------------------------------------------------- variance


def variance_figures(
    variance: Variance, labels: list[str]
) -> Iterator[tuple[str, str, str, Canvas]]:
    """A histogram of each error rate over seeds and over orders (side by side), its 95 % CI
    of the mean shaded, the baseline and every compared run marked."""
    from matplotlib.ticker import MaxNLocator

    order = {label: i for i, label in enumerate(labels)}
    metrics = dict.fromkeys(m.metric for m in variance.marks)  # the judged ones, in order
    for metric, axis in ((m, a) for m in metrics for a in variance.axes):
        summary = next((s for s in axis.summaries if s.metric == metric), None)
        if summary is None:
            continue
        error = metric.endswith("_error")
        number = _percent_text if error else _number_text
        canvas, axes = _new(WIDTH, 3.2, right=2.2)
        values = axis.values[metric]
        marked = [m.value for m in variance.marks if m.metric == metric]
        low, high = min(values), max(values)
        pad = (high - low) * 0.05 or max(abs(low) * 0.02, 1e-4)  # equal values: a narrow range
        bins = max(4, min(20, len(values) // 2))
        axes.hist(
            values,
            bins=bins,
            range=(low - pad / 5, high + pad / 5),
            color=NEUTRAL,
            alpha=0.45,
            edgecolor=NEUTRAL,
        )
        span = [*values, *marked, summary.ci_low, summary.ci_high]
        axes.set_xlim(min(span) - pad, max(span) + pad)
        axes.axvspan(
            summary.ci_low,
            summary.ci_high,
            color=NEUTRAL,
            alpha=0.18,
            label="95 % CI of the mean",
        )
        axes.axvline(summary.mean, color=NEUTRAL, linewidth=1, linestyle=":")
        for m in (m for m in variance.marks if m.metric == metric):
            index = order.get(m.label, 0)
            shown = f"{100 * m.value:.2f} %" if error else number(m.value)
            axes.axvline(
                m.value,
                color=INK if index == 0 else colour(index),
                linewidth=2 if index == 0 else 1.4,
                linestyle="-" if index == 0 else "--",
                label=f"{_short(m.label, 14)} {shown}",
            )
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of runs
        if error:
            _percent(axes, "x")
        over = {"seeds": "init seeds", "orders": "data orders", "runs": "runs"}[axis.axis]
        title = f"{metric.replace('_', ' ')} over {axis.runs} {over}"
        axes.set_title(title, loc="left")
        axes.set_xlabel(f"{metric} ({axis.fixed})")
        axes.set_ylabel("runs")
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

        caption = (
            f"{title} ({axis.fixed}): mean {number(summary.mean)}, 95 % CI of the mean "
            f"[{number(summary.ci_low)}, {number(summary.ci_high)}]; the baseline and each "
            "compared run marked"
        )
        yield f"variance-{axis.axis}-{metric}", title, caption, canvas


# ---------------------------------------------------------------- the matrix


def matrix_figure(study: MatrixStudy, index: int) -> tuple[str, str, str, Canvas]:
    """Trained on (rows) x evaluated on (columns): the error rate per cell; cells bit for
    bit the baseline's outlined and marked ≡."""
    from matplotlib.patches import Rectangle

    record = study.record
    labels = [c.label for c in record.configs]
    values = [[getattr(record.cell(t, e), study.metric) for e in labels] for t in labels]
    label_room = 0.4 + CHAR * max(len(label) for label in labels)  # inches
    bar = 1.3  # inches: the colour bar and its labels
    cell = max(1.05, (5.2 - label_room - bar) / len(labels))  # the title needs 5 inches
    width = label_room + cell * len(labels) + bar
    rows = min(cell, 1.3) * len(labels)  # inches: the grid's height
    height = 0.5 + label_room + rows
    canvas, axes = _new(width, height, left=label_room, right=bar, top=0.5, bottom=label_room)
    axes.grid(False)
    image = axes.imshow(values, cmap="viridis", aspect="auto")
    low, high = image.get_clim()
    identical = {(t, e) for t, e in study.identical_cells}
    for r, t in enumerate(labels):
        for c, e in enumerate(labels):
            value = values[r][c]
            light = high == low or (value - low) / (high - low) > 0.55
            same = (t, e) in identical
            axes.text(
                c,
                r,
                f"{100 * value:.2f} %" + ("\n≡ baseline" if same else ""),
                ha="center",
                va="center",
                fontsize=9.5,
                color="#111111" if light else "#ffffff",
            )
            if same:
                axes.add_patch(
                    Rectangle(
                        (c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#ff3b30", linewidth=2.5
                    )
                )
    axes.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("evaluated on")
    axes.set_ylabel("trained on")
    title = f"{study.metric.replace('_', ' ')}: trained on x evaluated on"
    axes.set_title(title, loc="left")
    box = (1 - (bar - 0.15) / width, label_room / height, 0.15 / width, rows / height)
    colour_bar = canvas.colorbar(image, cax=canvas.add_axes(box))
    _percent(colour_bar.ax)
    caption = f"{title} ({study.path}); {len(identical)} cell(s) bit-identical to the baseline"
    return f"matrix-{index + 1}", title, caption, canvas


# ---------------------------------------------------------------- all of them


def draw(data: ReportData, kind: ImageKind) -> list[Figure]:
    """Every figure the page's sections call for, in page order, as SVG or PNG bytes: each
    saved as soon as it is drawn, under one rc context (entering one per figure copied all
    of matplotlib's settings each time)."""
    import matplotlib

    matplotlib.use("Agg")
    labels = ["baseline", *(c.facts.label for c in data.compared)]
    sections = set(data.sections)
    media = "image/svg+xml" if kind == "svg" else "image/png"
    figures = []
    with matplotlib.rc_context(_rc(kind)):
        drawn: Iterator[tuple[str, tuple[str, str, str, Canvas]]] = iter(())
        if "curves" in sections:
            drawn = chain(drawn, (("curves", f) for f in curve_figures(data.curves)))
        if "drift" in sections:
            drawn = chain(drawn, (("drift", f) for f in drift_figures(data)))
        if "variance" in sections and data.variance is not None:
            variance = variance_figures(data.variance, labels)
            drawn = chain(drawn, (("variance", f) for f in variance))
        if "matrix" in sections:
            matrices = (matrix_figure(m, i) for i, m in enumerate(data.matrices))
            drawn = chain(drawn, (("matrix", f) for f in matrices))
        for section, (name, title, caption, canvas) in drawn:
            matplotlib.rcParams["svg.hashsalt"] = f"capsule-report-{name}"  # ids unique per page
            content = _save(canvas, kind)
            figures.append(Figure(name, section, title, caption, media, content))
    return figures
