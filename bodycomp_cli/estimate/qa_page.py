"""report.html: one self-contained page for reading a cohort run, the series to check first at the top.

A series is flagged when a level has review reasons (estimate/review.py: the cues that disagree, in words),
when a level's curve did not cross zero exactly once (the level may be wrong), or when a tissue touches the
edge of the field of view (its area is too small). Flagged series come first, the least confident first;
series skipped by QC follow, with their reasons. Previews are linked by paths relative to the page, so the output folder
can be moved or zipped whole.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from bodycomp_cli.estimate.cohort_page import cohort_section
from bodycomp_cli.io.atomic import atomic_write_text

Layout = list[tuple[str, list[str]]]

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section { border-top: 1px solid #ccc; padding: 0.8em 0; }
.flag { color: #a40000; font-weight: bold; }
.level { display: flex; gap: 1.2em; align-items: flex-start; margin: 0.6em 0; }
.level img { max-width: 640px; width: 60%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.15em 0.6em; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
"""


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _is_true(value: object) -> bool:
    return value is True or str(value).strip().lower() == "true"


def series_flags(row: dict[str, object], layout: Layout) -> list[str]:
    """Why a reader should look at this series first (empty when nothing stands out)."""
    return [f"{level}: {flag}" for level, tissues in layout for flag in level_flags(row, level, tissues)]


def level_flags(row: dict[str, object], level: str, tissues: Sequence[str]) -> list[str]:
    """Why a reader should look at this series' `level` (its reason, zero crossings other than one, edges)."""
    flags = []
    reason = row.get(f"{level}_reason")
    if isinstance(reason, str) and reason:
        flags.append(reason)
    review = row.get(f"{level}_review")
    if isinstance(review, str) and review and review != "nan":
        flags.append(review)
    crossings = _number(row.get(f"{level}_zero_crossings"))
    if crossings is not None and crossings != 1:
        flags.append(f"{int(crossings)} zero crossings")
    touching = [tissue for tissue in tissues if _is_true(row.get(f"{level}_{tissue}_touches_edge"))]
    if touching:
        verb = "touches" if len(touching) == 1 else "touch"
        flags.append(f"{', '.join(t.replace('_', ' ') for t in touching)} {verb} the edge of the image")
    return flags


def _confidence(row: dict[str, object], layout: Layout) -> float:
    """The series' lowest level confidence (1 when none was computed)."""
    values = [_number(row.get(f"{level}_confidence")) for level, _ in layout]
    return min((value for value in values if value is not None), default=1.0)


def _figures(row: dict[str, object], level: str, tissues: Sequence[str]) -> str:
    def cell(value: object, digits: int) -> str:
        number = _number(value)
        return "" if number is None else f"{number:.{digits}f}"

    lines = [
        "<table><tr><th>tissue</th><th>area cm²</th><th>mean HU</th><th>edge</th></tr>",
        *(
            f"<tr><td>{html.escape(t.replace('_', ' '))}</td><td>{cell(row.get(f'{level}_{t}_area_cm2'), 1)}</td>"
            f"<td>{cell(row.get(f'{level}_{t}_mean_hu'), 0)}</td>"
            f"<td>{'yes' if _is_true(row.get(f'{level}_{t}_touches_edge')) else ''}</td></tr>"
            for t in tissues
        ),
        "</table>",
    ]
    crossings = cell(row.get(f"{level}_zero_crossings"), 0) or "-"
    where = (
        f"slice {cell(row.get(f'{level}_slice_index'), 0)}, z = {cell(row.get(f'{level}_z_mm'), 1)} mm, "
        f"zero crossings: {crossings}, confidence: {cell(row.get(f'{level}_confidence'), 2) or '-'}"
    )
    return f"<div><b>{html.escape(level)}</b>: {html.escape(where)}" + "".join(lines) + "</div>"


def _series_section(row: dict[str, object], layout: Layout, flags: list[str], previews: dict[str, str]) -> str:
    about = [str(row.get(key) or "") for key in ("patient_id", "study_date", "series_description")]
    about_text = " · ".join(value for value in about if value and value != "nan")
    parts = [f"<section><h3>{html.escape(str(row['series']))}</h3>"]
    if about_text:
        parts.append(f"<p>{html.escape(about_text)}</p>")
    parts += [f'<p class="flag">{html.escape(flag)}</p>' for flag in flags]
    for level, tissues in layout:
        image = previews.get(level)
        picture = f'<a href="{html.escape(image)}"><img src="{html.escape(image)}" alt="preview"></a>' if image else ""
        parts.append(f'<div class="level">{picture}{_figures(row, level, tissues)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def write_qa_page(
    output_dir: Path,
    rows: Sequence[dict[str, object]],
    qc_rows: Sequence[dict[str, str]],
    layout: Layout,
    preview_paths: dict[str, dict[str, str]],
) -> None:
    """Write output_dir/report.html. preview_paths: series -> level -> preview path relative to output_dir."""
    flagged = [(row, series_flags(row, layout)) for row in rows]
    # Flagged first, the least confident of them first; the order within is the input's otherwise.
    first = sorted((item for item in flagged if item[1]), key=lambda item: _confidence(item[0], layout))
    order = first + [item for item in flagged if not item[1]]
    n_flagged = sum(1 for _, flags in flagged if flags)
    body = [
        "<h1>bodycomp estimate: QA</h1>",
        f"<p>{len(rows)} series estimated, {n_flagged} flagged, {len(qc_rows)} skipped by QC.</p>",
        cohort_section(rows, output_dir),
        "<h2>Flagged series</h2>" if n_flagged else "",
    ]
    for index, (row, flags) in enumerate(order):
        if index == n_flagged:
            body.append(_qc_section(qc_rows))
            body.append("<h2>Series without flags</h2>")
        body.append(_series_section(row, layout, flags, preview_paths.get(str(row["series"]), {})))
    if n_flagged == len(order):
        body.append(_qc_section(qc_rows))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>bodycomp QA</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(part for part in body if part) + "\n</body></html>\n"
    )
    atomic_write_text(Path(output_dir) / "report.html", page)


def _qc_section(qc_rows: Sequence[dict[str, str]]) -> str:
    if not qc_rows:
        return ""
    lines = ["<h2>Skipped by QC</h2>", "<table><tr><th>series</th><th>reason</th></tr>"]
    lines += [
        f"<tr><td>{html.escape(str(row['series']))}</td><td>{html.escape(str(row['reason']))}</td></tr>"
        for row in qc_rows
    ]
    return "\n".join([*lines, "</table>"])
