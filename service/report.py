"""The analytics report as one self-contained HTML file, plus PNG copies of its plots.

The page needs no network to be read: plots are PNGs inside it (data URIs), the CSS is inline,
there is no script, and a Content-Security-Policy forbids loading anything else. Comment text
and source names are escaped (Jinja2 autoescape), so a hostile comment shows as text.
"""

from __future__ import annotations

import base64
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.analytics import Report, TermCount

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

COLORS = {
    "negative": "#c0392b",
    "neutral": "#95a5a6",
    "positive": "#27ae60",
    "offensive": "#d35400",
    "hate": "#8e44ad",
    "volume": "#34495e",
    "received": "#2980b9",
    "answered": "#16a085",
}
DPI = 100


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def files_dir(output: Path) -> Path:
    """Where the PNG copies go: ``report.html`` -> ``report_files/``."""
    return output.with_name(output.stem + "_files")


def write_report(report: Report, output: Path) -> list[Path]:
    """Write the HTML page to ``output`` and each plot as a PNG beside it; returns the PNGs."""
    plots = make_plots(report)
    folder = files_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in plots:
        path = folder / f"{plot.name}.png"
        path.write_bytes(plot.png)
        written.append(path)
    output.write_text(render_html(report, plots), encoding="utf-8")
    return written


# ---------------------------------------------------------------------------------------------
# Plots


def make_plots(report: Report) -> list[Plot]:
    drawings: list[tuple[str, str, Callable[[Figure, Report], None], tuple[float, float]]] = [
        ("volume_sentiment", "Comments and sentiment per day", _volume_sentiment, (10, 5.5)),
        ("offensive_hate", "Offensive and hateful comments per day", _offensive_hate, (10, 3.2)),
        ("questions", "Questions received and answered per day", _questions, (10, 3.2)),
        ("reply_time", "Time to first reply", _reply_time, (10, 3.2)),
        ("sources", "Top sources", _sources, (10, 4.5)),
        ("terms", "Top terms in negative comments and in questions", _terms, (10, 7.5)),
    ]
    plots = []
    for name, title, draw, size in drawings:
        plots.append(Plot(name, title, _png(draw, report, size)))
    return plots


def _png(
    draw: Callable[[Figure, Report], None], report: Report, size: tuple[float, float]
) -> bytes:
    # Figure without pyplot: no global state, no GUI backend; the Agg canvas draws it.
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    draw(figure, report)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A character missing from the bundled font (an emoji in a term) is drawn as a box.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _plain(text: str) -> str:
    """Text for matplotlib: a ``$`` would otherwise start math mode (and may fail to parse)."""
    return text.replace("$", r"\$")


def _empty(ax: Axes, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _days(report: Report) -> Any:
    import numpy as np

    return np.array([day.day for day in report.daily], dtype="datetime64[D]")


def _date_axis(ax: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.grid(axis="y", alpha=0.3)


def _share_line(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if value is None else value * 100 for value in values]


def _volume_sentiment(figure: Figure, report: Report) -> None:
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    if not report.daily:
        _empty(top)
        _empty(bottom)
        return
    days = _days(report)
    top.bar(days, [d.comments for d in report.daily], color=COLORS["volume"], width=0.9)
    top.set_ylabel("comments")
    top.grid(axis="y", alpha=0.3)
    shares = [
        (label, _share_line([getattr(d, f"{label}_share") for d in report.daily]))
        for label in ("negative", "neutral", "positive")
    ]
    bottom.stackplot(
        days,
        *[values for _, values in shares],
        labels=[label for label, _ in shares],
        colors=[COLORS[label] for label, _ in shares],
        alpha=0.85,
    )
    bottom.set_ylim(0, 100)
    bottom.set_ylabel("% of comments")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    _date_axis(bottom)


def _offensive_hate(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    if not report.daily:
        _empty(ax)
        return
    days = _days(report)
    for label in ("offensive", "hate"):
        values = _share_line([getattr(d, f"{label}_share") for d in report.daily])
        ax.plot(days, values, color=COLORS[label], label=label, marker=".", linewidth=1.5)
    ax.set_ylabel("% of comments")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    _date_axis(ax)


def _questions(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    if not report.daily:
        _empty(ax)
        return
    days = _days(report)
    ax.bar(days, [d.questions for d in report.daily], color=COLORS["received"], label="received")
    ax.bar(
        days,
        [d.questions_answered for d in report.daily],
        color=COLORS["answered"],
        width=0.5,
        label="answered",
    )
    ax.set_ylabel("questions")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    _date_axis(ax)


def _reply_time(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    times = report.reply_time
    if not times.replies:
        _empty(ax, "no replies with a time")
        return
    labels = [bucket.label for bucket in times.buckets]
    ax.bar(labels, [bucket.count for bucket in times.buckets], color=COLORS["answered"])
    ax.set_ylabel("first replies")
    ax.set_title(
        f"median {_duration(times.median_seconds)}, 90% within {_duration(times.p90_seconds)} "
        f"({times.replies:,} replies)",
        fontsize="medium",
    )
    ax.grid(axis="y", alpha=0.3)


def _sources(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    if not report.sources:
        _empty(ax, "no sources in the input")
        return
    rows = list(reversed(report.sources))
    positions = range(len(rows))
    counts = [row.comments for row in rows]
    negatives = [row.comments * (row.negative_share or 0) for row in rows]
    ax.barh(positions, counts, color=COLORS["volume"], label="comments")
    ax.barh(positions, negatives, color=COLORS["negative"], label="of which negative")
    ax.set_yticks(list(positions), [_plain(row.source[:40]) for row in rows])
    ax.set_xlabel("comments")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)


def _terms(figure: Figure, report: Report) -> None:
    axes = figure.subplots(2, 2)
    panels = [
        ("negative", "words", COLORS["negative"]),
        ("negative", "phrases", COLORS["negative"]),
        ("question", "words", COLORS["received"]),
        ("question", "phrases", COLORS["received"]),
    ]
    for ax, (group_name, kind, color) in zip(axes.flat, panels, strict=True):
        group = report.terms[group_name]
        terms: list[TermCount] = getattr(group, kind)
        title = "negative comments" if group_name == "negative" else "questions"
        ax.set_title(f"{kind} in {title}", fontsize="medium")
        if not terms:
            _empty(ax)
            continue
        rows = list(reversed(terms))
        ax.barh(range(len(rows)), [t.comments for t in rows], color=color)
        ax.set_yticks(range(len(rows)), [_plain(t.term[:30]) for t in rows])
        ax.tick_params(axis="y", labelsize="small")
        ax.set_xlabel("comments")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


# ---------------------------------------------------------------------------------------------
# The page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>commentdesk report: {{ report.input }}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0 auto; max-width: 1040px; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
           gap: 0.6rem; margin: 1rem 0; }
.card { background: #f5f6f7; border-radius: 6px; padding: 0.6rem 0.8rem; }
.card b { display: block; font-size: 1.35rem; }
figure { margin: 0.8rem 0; }
figure img { max-width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3rem 0.5rem; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.text { white-space: pre-wrap; overflow-wrap: anywhere; }
td.nowrap { white-space: nowrap; }
.muted { color: #666; font-size: 0.9rem; }
</style>
</head>
<body>
<h1>commentdesk report</h1>
<p class="muted">{{ report.input }}: {{ "{:,}".format(report.comments) }} comments
{%- if report.first_day %}, {{ report.first_day }} to {{ report.last_day }}{% endif %}
{%- if report.source %}; source {{ report.source }}{% endif %}
{%- if report.since %}; since {{ report.since.isoformat() }}{% endif %}
{%- if report.until %}; until {{ report.until.isoformat() }}{% endif %}.
Columns used: {% for role, name in report.columns.items() %}{{ role }} = {{ name or "none" }}
{%- if not loop.last %}, {% endif %}{% endfor %}.</p>

<div class="summary">
  <div class="card"><b>{{ "{:,}".format(report.comments) }}</b>comments</div>
  <div class="card"><b>{{ percent(report.total.negative_share) }}</b>negative</div>
  <div class="card"><b>{{ percent(report.total.offensive_share) }}</b>offensive</div>
  <div class="card"><b>{{ percent(report.total.hate_share) }}</b>hate</div>
  <div class="card"><b>{{ "{:,}".format(report.total.questions) }}</b>questions,
    {{ "{:,}".format(report.total.questions_answered) }} answered</div>
  <div class="card"><b>{{ duration(report.reply_time.median_seconds) }}</b>median time to
    first reply</div>
</div>
{% if report.notes or report.skipped %}
<ul class="muted">
{% for note in report.notes %}<li>{{ note }}</li>
{% endfor %}
{% for reason, count in report.skipped.items() %}<li>Skipped: {{ "{:,}".format(count) }}
  ({{ reason }}).</li>
{% endfor %}
</ul>
{% endif %}

{% for plot in plots %}
<h2>{{ plot.title }}</h2>
<figure><img src="{{ plot.data_uri }}" alt="{{ plot.title }}"></figure>
{% if plot.name == "sources" and report.sources %}
<table>
<tr><th>source</th><th class="num">comments</th><th class="num">negative</th>
<th class="num">questions</th></tr>
{% for row in report.sources %}<tr><td>{{ row.source }}</td>
<td class="num">{{ "{:,}".format(row.comments) }}</td>
<td class="num">{{ percent(row.negative_share) }}</td>
<td class="num">{{ "{:,}".format(row.questions) }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if plot.name == "terms" %}
<p class="muted">Counted on {{ "{:,}".format(report.terms.negative.counted) }} of
{{ "{:,}".format(report.terms.negative.comments) }} negative comments and
{{ "{:,}".format(report.terms.question.counted) }} of
{{ "{:,}".format(report.terms.question.comments) }} questions (the most recent), each term
once per comment.</p>
{% endif %}
{% endfor %}

{% for title, examples in (("Most negative comments", report.most_negative),
                           (liked_title, report.most_liked)) %}
<h2>{{ title }}</h2>
{% if examples %}
<table>
<tr><th>time (UTC)</th><th>source</th><th>comment</th><th class="num">P(negative)</th>
<th class="num">P(positive)</th><th class="num">likes</th></tr>
{% for example in examples %}<tr>
<td class="nowrap">{{ example.time.strftime("%Y-%m-%d %H:%M") }}</td>
<td>{{ example.source or "" }}</td>
<td class="text">{{ example.text }}</td>
<td class="num">{{ number(example.negative) }}</td>
<td class="num">{{ number(example.positive) }}</td>
<td class="num">{{ "" if example.likes is none else "{:,.0f}".format(example.likes) }}</td>
</tr>
{% endfor %}</table>
{% else %}<p class="muted">No comments.</p>{% endif %}
{% endfor %}
</body>
</html>
"""


def render_html(report: Report, plots: Sequence[Plot]) -> str:
    from jinja2 import Environment

    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(PAGE)
    liked_title = (
        "Most-liked comments"
        if report.most_liked_by == "likes"
        else "Most positive comments (no likes in the input)"
    )
    helpers: dict[str, Any] = {
        "percent": _percent,
        "duration": _duration,
        "number": lambda value: "" if value is None else f"{value:.3f}",
    }
    return template.render(report=report, plots=plots, liked_title=liked_title, **helpers)
