"""The report of an evaluation: ``results.json``, ``results.csv``, PNG plots and
``report.html``, each written atomically into the report folder.

Summaries follow the field: BSSEval's SDR, SIR, ISR, SAR and SI-SDR as the median over
tracks (of each track's median over frames, SiSEC 2018), uSDR as the mean over tracks
(the MDX challenges and MVSEP). Plots are drawn with matplotlib's Agg backend (no
display): per stem a box of each model's track SDRs, as SiSEC draws them, and per
track a bar chart of every stem's SDR by model.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bridge.atomic import write_bytes
from bridge.evaluate.metrics import FRAME_SECONDS, METRICS
from bridge.evaluate.run import Evaluation

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
REPORT_HTML = "report.html"
PLOTS = "plots"
#: The metric a model's stems are plotted and ranked by.
PLOTTED = "SDR"
#: uSDR is averaged over tracks, as MDX and MVSEP do; the others take the median.
MEAN_METRICS = ("uSDR",)


@dataclass(frozen=True)
class Summary:
    """One model's stem over all tracks: ``value`` is the median (mean for uSDR) of the
    tracks' values; ``tracks`` counts those with a value."""

    model: str
    stem: str
    metric: str
    value: float | None
    tracks: int


def summarise(evaluation: Evaluation) -> list[Summary]:
    """Every model x stem x metric over the tracks, in the order scored."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for score in evaluation.scores:
        bucket = values.setdefault((score.model, score.stem, score.metric), [])
        if score.value is not None:
            bucket.append(score.value)
    rows = []
    for (model, stem, metric), found in values.items():
        if not found:
            value = None
        elif metric in MEAN_METRICS:
            value = math.fsum(found) / len(found)
        else:
            ordered = sorted(found)
            middle = len(ordered) // 2
            value = (
                ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            )
        rows.append(Summary(model, stem, metric, value, len(found)))
    return rows


def results_document(evaluation: Evaluation) -> dict[str, Any]:
    """Everything ``results.json`` holds."""
    dataset = evaluation.dataset
    return {
        "dataset": {
            "root": str(dataset.root),
            "layout": dataset.layout,
            "subset": dataset.subset,
            "stems": list(dataset.stems),
        },
        "metrics": {
            "SDR, SIR, ISR, SAR": f"BSSEval v4 (museval), {FRAME_SECONDS:g} s frames, median "
            "over frames, then median over tracks",
            "uSDR": "whole-track SDR of the MDX challenges / MVSEP, mean over tracks",
            "SI-SDR": "scale-invariant SDR, whole track, median over tracks",
        },
        "models": [
            {
                "name": candidate.name,
                "key": candidate.key,
                "estimates": str(candidate.estimates) if candidate.estimates else None,
                "lineup": candidate.settings.lineup.describe() if candidate.settings else None,
                "separated_now": evaluation.separated.get(candidate.key, 0),
            }
            for candidate in evaluation.candidates
        ],
        "tracks": evaluation.tracks,
        "skipped": [asdict(item) for item in evaluation.skipped],
        "unscored": [asdict(item) for item in evaluation.unscored],
        "left_out": [asdict(item) for item in evaluation.left_out],
        "summary": [asdict(row) for row in summarise(evaluation)],
        "scores": [asdict(score) for score in evaluation.scores],
        "timings": {
            "separation_seconds": round(evaluation.separation_seconds, 3),
            "scoring_seconds": round(evaluation.scoring_seconds, 3),
        },
    }


def write_report(evaluation: Evaluation, folder: Path) -> dict[str, Path]:
    """``results.json``, ``results.csv``, the plots and ``report.html`` into ``folder``.

    Returns:
        Each file's path, by kind (``json``, ``csv``, ``html``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    document = results_document(evaluation)
    write_bytes(folder / RESULTS_JSON, json.dumps(document, indent=2).encode())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["track", "stem", "metric", "model", "value"])
    for score in evaluation.scores:
        value = "" if score.value is None else f"{score.value:.4f}"
        writer.writerow([score.track, score.stem, score.metric, score.model, value])
    write_bytes(folder / RESULTS_CSV, text.getvalue().encode())
    plots = _draw_plots(evaluation, folder / PLOTS)
    write_bytes(folder / REPORT_HTML, _html(document, plots).encode())
    return {
        "json": folder / RESULTS_JSON,
        "csv": folder / RESULTS_CSV,
        "html": folder / REPORT_HTML,
    }


def _draw_plots(evaluation: Evaluation, folder: Path) -> dict[str, str]:
    """The PNGs, as ``{caption: path relative to the report}``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display, whatever the user's default
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    models = [candidate.name for candidate in evaluation.candidates]
    sdr = [score for score in evaluation.scores if score.metric == PLOTTED]
    stems = list(dict.fromkeys(score.stem for score in sdr))
    plots: dict[str, str] = {}
    if not stems:
        return plots

    figure = Figure(figsize=(3.2 * len(stems) + 1, 4.2), layout="constrained")
    axes = figure.subplots(1, len(stems), squeeze=False)[0]
    for ax, stem in zip(axes, stems, strict=True):
        boxes = [
            [s.value for s in sdr if s.stem == stem and s.model == m and s.value is not None]
            for m in models
        ]
        ax.boxplot(boxes, showmeans=False)  # a model without values: no box
        ax.set_xticks(range(1, len(models) + 1), models, rotation=20, ha="right", fontsize=8)
        ax.set_title(stem)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{PLOTTED} (dB), median over {FRAME_SECONDS:g} s frames")
    plots[f"{PLOTTED} per track, by stem and model"] = _save(figure, folder / "sdr_by_stem.png")

    for index, track in enumerate(evaluation.tracks, start=1):
        figure = Figure(
            figsize=(1.2 * len(stems) * max(1, len(models)) + 2, 3.4), layout="constrained"
        )
        ax = figure.subplots()
        width = 0.8 / max(1, len(models))
        for offset, model in enumerate(models):
            found = {
                s.stem: s.value
                for s in sdr
                if s.track == track and s.model == model and s.value is not None
            }
            drawn = [(i, found[stem]) for i, stem in enumerate(stems) if stem in found]
            ax.bar(
                [i + offset * width for i, _ in drawn],
                [value for _, value in drawn],
                width,
                label=model,
            )
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(stems))], stems)
        ax.set_ylabel(f"{PLOTTED} (dB)")
        ax.set_title(track)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.legend(fontsize=8)
        plots[f"{track}"] = _save(figure, folder / f"track-{index:03d}.png")
    return plots


def _save(figure: Any, path: Path) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    write_bytes(path, buffer.getvalue())
    return f"{PLOTS}/{path.name}"


def _html(document: dict[str, Any], plots: dict[str, str]) -> str:
    """A self-contained page: the summary table, the plots, what was skipped or left out."""
    e = html.escape
    summary = document["summary"]
    stems = list(dict.fromkeys(row["stem"] for row in summary))
    models = [model["name"] for model in document["models"]]

    def cell(model: str, stem: str, metric: str) -> str:
        for row in summary:
            if (row["model"], row["stem"], row["metric"]) == (model, stem, metric):
                return "—" if row["value"] is None else f"{row['value']:.2f}"
        return ""

    head = "".join(f"<th>{e(metric)}</th>" for metric in METRICS)
    rows = "".join(
        f"<tr><td>{e(model)}</td><td>{e(stem)}</td>"
        + "".join(f"<td>{cell(model, stem, metric)}</td>" for metric in METRICS)
        + "</tr>"
        for model in models
        for stem in stems
        if any(row["model"] == model and row["stem"] == stem for row in summary)
    )
    pictures = "".join(
        f'<figure><img src="{e(src)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption>'
        "</figure>"
        for caption, src in plots.items()
    )
    notes = _notes(document)
    timings = document["timings"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>StemBridge evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
td:nth-child(n+3) {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>StemBridge evaluation</h1>
<p>{e(document["dataset"]["root"])} ({e(document["dataset"]["layout"])}{
        ", " + e(document["dataset"]["subset"]) if document["dataset"]["subset"] else ""
    }): {len(document["tracks"])} tracks scored, models: {e(", ".join(models))}.
Separation {timings["separation_seconds"]:.1f} s, scoring {timings["scoring_seconds"]:.1f} s
(this run).</p>
<p>{"; ".join(f"{e(k)}: {e(v)}" for k, v in document["metrics"].items())}.</p>
<table id="summary"><tr><th>model</th><th>stem</th>{head}</tr>{rows}</table>
{notes}
{pictures}
</body></html>
"""


def _notes(document: dict[str, Any]) -> str:
    e = html.escape
    parts = []
    for title, key, fields in (
        ("Tracks skipped", "skipped", ("track", "reason")),
        ("Not scored", "unscored", ("track", "model", "reason")),
        ("Stems left out", "left_out", ("model", "stem", "reason")),
    ):
        if document[key]:
            items = "".join(
                "<li>" + " — ".join(e(str(item[f])) for f in fields) + "</li>"
                for item in document[key]
            )
            parts.append(f'<h2>{title}</h2><ul id="{key}">{items}</ul>')
    return "\n".join(parts)


def table_rows(evaluation: Evaluation) -> tuple[Sequence[str], list[list[str]]]:
    """The terminal table: a row per model and stem, a column per metric."""
    found = {(row.model, row.stem, row.metric): row.value for row in summarise(evaluation)}
    keys = list(dict.fromkeys((model, stem) for model, stem, _ in found))
    rows = [
        [
            model,
            stem,
            *(
                "—"
                if found.get((model, stem, metric)) is None
                else f"{found[(model, stem, metric)]:.2f}"
                for metric in METRICS
            ),
        ]
        for model, stem in keys
    ]
    return ("model", "stem", *METRICS), rows


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
