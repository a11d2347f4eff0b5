"""The cohort section of report.html: which cut-offs and HU ranges were used, and how many series they flag."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from bodycomp_cli.estimate.follow_up import patient_rows, study_date
from bodycomp_cli.estimate.indices import number_or_none
from bodycomp_cli.io.atomic import atomic_path

SMI_PICTURE = "cohort/smi_by_sex.png"
OVER_TIME_PICTURE = "cohort/over_time.png"
# what the over-time picture shows: L3 SMI where any followed-up study has it, else L3 muscle area
OVER_TIME_MEASURES = (("L3_smi_cm2_m2", "L3 SMI (cm²/m²)"), ("L3_muscle_area_cm2", "L3 muscle area (cm²)"))
# scheme -> [(sex, threshold, what it applies to)] drawn on the SMI picture
SMI_LINES = {
    "martin2013": [("M", 43.0, "men, BMI < 25"), ("M", 53.0, "men, BMI >= 25"), ("F", 41.0, "women")],
    "prado2008": [("M", 52.4, "men"), ("F", 38.5, "women")],
}


def cohort_section(rows: Sequence[dict[str, object]], output_dir: Path | None = None) -> str:
    """HTML: the --cutoffs choice with its citation, the --hu-ranges choice, the flag counts (flagged / not
    flagged / blank for a missing input) and, in output_dir, a picture of L3 SMI by sex with the cut-offs."""
    if not rows:
        return ""
    scheme = str(rows[0].get("cutoffs") or "none")
    citation = str(rows[0].get("cutoffs_citation") or "")
    hu_ranges = str(rows[0].get("hu_ranges") or "none")
    parts = [
        "<h2>Cohort</h2>",
        f"<p>HU ranges: {html.escape(hu_ranges)}. Cut-offs: {html.escape(scheme)}"
        + (f" ({html.escape(citation)})" if citation else "")
        + ".</p>",
    ]
    if scheme != "none":
        parts.append(
            "<table><tr><th>flag</th><th>1 (under the cut-off)</th><th>0</th><th>blank (input missing)</th></tr>"
        )
        for flag in ("sarcopenia", "low_muscle_attenuation"):
            values = [str(row.get(flag) or "") for row in rows]
            counts = (values.count("1"), values.count("0"), sum(1 for v in values if v not in ("0", "1")))
            parts.append(f"<tr><td>{flag}</td>" + "".join(f"<td>{n}</td>" for n in counts) + "</tr>")
        parts.append("</table>")
    pictures = []
    if output_dir is not None and save_smi_picture(Path(output_dir) / SMI_PICTURE, rows, scheme):
        pictures.append(_image(SMI_PICTURE, f"L3 SMI by sex with the {scheme} cut-offs"))
    if output_dir is not None and save_over_time_picture(Path(output_dir) / OVER_TIME_PICTURE, rows):
        pictures.append(_image(OVER_TIME_PICTURE, "each followed-up patient's L3 measure per study date"))
    if pictures:
        side_by_side = '<div style="display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start">'
        parts.append(side_by_side + "".join(pictures) + "</div>")
    return "\n".join(parts)


def _image(source: str, text: str) -> str:
    return f'<img style="max-width: 49%" src="{source}" alt="{html.escape(text)}">'  # two side by side


def save_smi_picture(path: Path, rows: Sequence[dict[str, object]], scheme: str) -> bool:
    """A strip plot of L3 SMI for men and women, the scheme's thresholds drawn; False when no row has SMI and sex."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = {sex: [] for sex in ("M", "F")}
    for row in rows:
        smi = number_or_none(row.get("L3_smi_cm2_m2"))
        if smi is not None and row.get("sex") in points:
            points[str(row["sex"])].append(smi)
    if not any(points.values()):
        return False
    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for position, (sex, values) in enumerate(points.items()):
        jitter = [((index * 0.618) % 1.0 - 0.5) * 0.3 for index in range(len(values))]  # spread, reproducibly
        axes.plot([position + j for j in jitter], values, "o", alpha=0.7, label=f"{sex} (n = {len(values)})")
    colours = ("tab:red", "tab:purple", "tab:red")
    for (sex, threshold, what), colour in zip(SMI_LINES.get(scheme, []), colours, strict=False):
        x = 0 if sex == "M" else 1
        axes.hlines(threshold, x - 0.35, x + 0.35, colors=colour, linestyles="--")
        axes.text(x + 0.37, threshold, f"{threshold:g} ({what})", va="center", fontsize=8)
    axes.set_xticks([0, 1], ["men", "women"])
    axes.set_xlim(-0.5, 2.0)
    axes.set_ylabel("L3 SMI (cm²/m²)")
    axes.set_title(f"L3 skeletal muscle index by sex; cut-offs: {scheme}")
    axes.legend(loc="upper right", fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return True


def save_over_time_picture(path: Path, rows: Sequence[dict[str, object]]) -> bool:
    """One line per patient with more than one dated study: L3 SMI (else L3 muscle area) per study date, one
    series per study as patients.csv chooses it. False when no patient has two studies with the measure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    found = _followed_up_points(rows)
    if found is None:
        return False
    label, series = found
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    figure = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for patient, points in sorted(series.items()):
        axes.plot([when for when, _ in points], [value for _, value in points], "o-", label=patient)
    dates = [when for points in series.values() for when, _ in points]
    if min(dates) == max(dates):  # studies of one day (several series): give the axis a span to put ticks on
        axes.set_xlim(min(dates) - timedelta(days=30), max(dates) + timedelta(days=30))
    locator = AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.grid(alpha=0.3)
    axes.set_ylabel(label)
    axes.set_xlabel("study date")
    patients = f"{len(series)} patient{'s' if len(series) != 1 else ''} with two studies or more"
    axes.set_title(f"{label.split(' (')[0]} per study date: {patients}")
    if len(series) <= 10:  # beyond that colours repeat (matplotlib cycles 10) and a legend would mislead
        axes.legend(title="patient", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return True


def _followed_up_points(rows: Sequence[dict[str, object]]) -> tuple[str, dict[str, list[tuple[date, float]]]] | None:
    """(axis label, patient -> [(study date, value)]) of the first OVER_TIME_MEASURES that any patient has at
    two study dates or more; None when none has."""
    for measure, label in OVER_TIME_MEASURES:
        series: dict[str, list[tuple[date, float]]] = {}
        for entry in patient_rows(rows, [measure], ["L3"]):
            when = study_date(entry["study_date"])
            if entry["value"] is not None and when is not None:
                series.setdefault(str(entry["patient_id"]), []).append((when, float(entry["value"])))
        series = {patient: points for patient, points in series.items() if len(points) > 1}
        if series:
            return label, series
    return None
