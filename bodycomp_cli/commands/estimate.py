"""estimate and evaluate: thin Typer wrappers around bodycomp_cli.estimate (torch is imported inside)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bodycomp_cli.commands.common import (
    DEVICES_PANEL,
    AmpOption,
    GpusOption,
    OverwriteOption,
    computed_default,
    levels_option,
    report_user_errors,
    set_malloc_policy,
)
from bodycomp_cli.errors import BodycompError

BatchOption = Annotated[
    int, typer.Option("-b", "--batch-size", help="Slices per inference batch.", min=1, rich_help_panel=DEVICES_PANEL)
]
QC_PANEL, OUTPUT_PANEL = "Quality control (qc.csv)", "Output"


def _table(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for index, column in enumerate(columns):
        # the row names (tissue, level) are never cut; the numbers' headers wrap instead
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    @app.command("estimate")
    @report_user_errors
    def estimate_command(
        inputs: Annotated[
            list[Path],
            typer.Argument(
                help="DICOM folders or export trees (every series found), NIfTI files, .npz volumes or manifest CSVs.",
                show_default=False,
            ),
        ],
        select_model: Annotated[
            Path, typer.Option("--select-model", help="Slice-selection run folder.", show_default=False)
        ],
        seg_model: Annotated[
            list[str],
            typer.Option(
                "--seg-model",
                help="Segmentation run for all levels, or LEVELS=RUN_DIR (L3=abdomen, T5,T8=thorax); repeatable.",
                show_default=False,
            ),
        ],
        output_dir: Annotated[Path, typer.Option("-o", "--output", help="Output folder.", show_default=False)],
        levels: levels_option("the slice-selection run's") = None,
        range_mm: Annotated[
            float,
            typer.Option(
                "--range",
                help="Also measure every slice within +-MM of the chosen one.",
                rich_help_panel=OUTPUT_PANEL,
                min=0,
            ),
        ] = 0.0,
        save_masks: Annotated[
            bool,
            typer.Option(
                "--save-masks", help="Write each mask as a .npy file into masks/.", rich_help_panel=OUTPUT_PANEL
            ),
        ] = False,
        dicom_seg: Annotated[
            bool,
            typer.Option(
                "--dicom-seg",
                help="Write a DICOM SEG per series and level into dicom_seg/ (DICOM inputs).",
                rich_help_panel=OUTPUT_PANEL,
            ),
        ] = False,
        previews: Annotated[
            bool, typer.Option("--previews/--no-previews", help="Write previews/*.png.", rich_help_panel=OUTPUT_PANEL)
        ] = True,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume", help="Continue in OUTPUT: skip series already in results.csv.", rich_help_panel=OUTPUT_PANEL
            ),
        ] = False,
        overwrite: OverwriteOption = False,
        min_slices: Annotated[
            int, typer.Option(help="QC: fewest slices a series may have.", rich_help_panel=QC_PANEL, min=1)
        ] = 20,
        spacing_tolerance: Annotated[
            float,
            typer.Option(
                help="QC: largest departure (mm) of a z step from the median step.", rich_help_panel=QC_PANEL, min=0
            ),
        ] = 0.1,
        min_matrix: Annotated[
            int,
            typer.Option(
                help="QC (DICOM): fewest rows and columns an image may have.", rich_help_panel=QC_PANEL, min=1
            ),
        ] = 128,
        gpus: GpusOption = None,
        amp: AmpOption = None,
        batch_size: BatchOption = 32,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                help="Processes reading the next series while the models run; 0: read in this process "
                "\\[default: half of this process's share of the usable cores, 1 to 8]",
                min=0,
                rich_help_panel=DEVICES_PANEL,
                show_default=False,
            ),
        ] = None,
        hu_ranges: Annotated[
            str,
            typer.Option(
                "--hu-ranges",
                help="alberta: count only muscle pixels of -29..150 HU and fat pixels of -190..-30 HU; "
                "none: the mask as the model drew it.",
            ),
        ] = "none",
        cutoffs: Annotated[
            str,
            typer.Option("--cutoffs", help="L3 cut-off flags: martin2013, prado2008 or none (docs/estimate.md)."),
        ] = "martin2013",
        per_vertebra: Annotated[
            bool,
            typer.Option(
                "--per-vertebra",
                help="Also average each level's areas and HU over every slice of its vertebra (docs/estimate.md).",
                rich_help_panel=OUTPUT_PANEL,
            ),
        ] = False,
        volume: Annotated[
            list[str] | None,
            typer.Option(
                "--volume",
                help="FROM:TO levels (L1:L5): each tissue's volume in cm³ between their slices, into volumes.csv; "
                "repeatable or comma-separated. \\[default: none]",
                **computed_default(OUTPUT_PANEL),
            ),
        ] = None,
        dicom_sr: Annotated[
            bool,
            typer.Option(
                "--dicom-sr",
                help="Write a DICOM SR measurement report (TID 1500) per series into dicom_sr/ (DICOM inputs).",
                rich_help_panel=OUTPUT_PANEL,
            ),
        ] = False,
        shard: Annotated[
            str | None,
            typer.Option(
                "--shard",
                help="K/N: estimate only shard K (0 to N-1) of N, alone (a Slurm array task); a later --resume "
                "without --shard merges the shards. \\[default: every series]",
                **computed_default(DEVICES_PANEL),
            ),
        ] = None,
    ) -> None:
        """Find vertebral levels in CT series and measure muscle and fat areas and HU there.

        Example: bodycomp estimate cohort.csv --select-model models/select --seg-model models/seg -o results/
        """
        from bodycomp_cli.core.workers import default_loader_workers
        from bodycomp_cli.estimate.inputs import collect_inputs
        from bodycomp_cli.estimate.models import load_estimator_models
        from bodycomp_cli.estimate.qc import QcSettings
        from bodycomp_cli.estimate.ranks import joined_ranks, shard_ranks
        from bodycomp_cli.estimate.run import EstimateOptions, check_output_dir, run_estimate
        from bodycomp_cli.estimate.volumes import check_volume_levels, parse_volume_specs

        out = Console()
        set_malloc_policy()
        # Everything that can be refused is checked before the output folder exists.
        _check_choice("--hu-ranges", hu_ranges, ("none", "alberta"))
        _check_choice("--cutoffs", cutoffs, ("martin2013", "prado2008", "none"))
        volume_ranges = parse_volume_specs(volume or [])
        series = collect_inputs(inputs)
        if shard is not None and overwrite:
            raise BodycompError("--shard and --overwrite: a shard adds to OUTPUT; remove an old folder first")
        # torchrun: every rank estimates its share, rank 0 writes the outputs; --shard: this share alone.
        in_ranks = joined_ranks() if shard is None else contextlib.nullcontext(shard_ranks(shard))
        with in_ranks as ranks:
            ranks.from_main(lambda: check_output_dir(output_dir, resume or ranks.alone, overwrite))
            models = load_estimator_models(
                select_model,
                seg_model,
                levels,
                gpus=gpus,
                batch_size=batch_size,
                log=out.print if ranks.is_main else None,
                amp=amp,
                distributed=ranks.joined,
            )
            check_volume_levels(volume_ranges, models.levels)
            options = EstimateOptions(
                range_mm=range_mm,
                save_masks=save_masks,
                previews=previews,
                resume=resume,
                overwrite=overwrite,
                qc=QcSettings(min_slices=min_slices, spacing_tolerance_mm=spacing_tolerance, min_matrix=min_matrix),
                dicom_seg=dicom_seg,
                workers=default_loader_workers() if workers is None else workers,
                hu_ranges=hu_ranges,
                cutoffs=cutoffs,
                per_vertebra=per_vertebra,
                volumes=tuple(volume_ranges),
                dicom_sr=dicom_sr,
            )
            try:
                summary = run_estimate(series, models, output_dir, options, ranks)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(
                    f"interrupted: {output_dir / 'results.csv'} keeps the series finished so far. "
                    "To continue, run the same command with --resume"
                ) from None
        if not ranks.is_main:
            return
        rate = summary.slices / summary.seconds if summary.seconds > 0 else 0.0
        rows = [
            ("estimated", str(len(summary.estimated))),
            ("already done (--resume)", str(len(summary.already_done))),
            ("failed QC (qc.csv)", str(len(summary.qc_failed))),
            ("slices/s", f"{rate:.1f}"),
        ]
        out.print(_table(f"estimate -> {output_dir}", rows, ("series", "count")))
        if ranks.alone:
            out.print(
                f"shard {shard} done; once every shard is, merge them: the same command without --shard, with --resume",
                markup=False,
            )

    @app.command("evaluate")
    @report_user_errors
    def evaluate_command(
        run_dir: Annotated[Path, typer.Argument(help="Trained run folder (config.json, checkpoints).")],
        data_dir: Annotated[Path, typer.Argument(help="Prepared data: prepare-seg arrays or prepare-slices layout.")],
        output_dir: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Output folder. \\[default: RUN_DIR/evaluation_SPLIT]", show_default=False
            ),
        ] = None,
        split: Annotated[str, typer.Option(help="Which split of DATA_DIR to score.")] = "val",
        pixel_spacing: Annotated[
            float | None,
            typer.Option(
                help="Segmentation: pixel size in mm of the prepared arrays, for areas in cm^2. "
                "\\[default: the spacing columns of DATA_DIR/SPLIT_index.csv, else areas in pixels]",
                min=0,
                show_default=False,
            ),
        ] = None,
        overwrite: OverwriteOption = False,
        gpus: GpusOption = None,
        amp: AmpOption = None,
        batch_size: BatchOption = 16,
    ) -> None:
        """Score a trained model on prepared data: Dice, area error, slice-selection error.

        Example: bodycomp evaluate models/seg_run seg_data/ --split val -o eval_seg/
        """
        from bodycomp_cli.estimate.evaluate import EvaluateOptions, evaluate_run

        set_malloc_policy()
        options = EvaluateOptions(
            split=split, overwrite=overwrite, gpus=gpus, amp=amp, batch_size=batch_size, pixel_spacing_mm=pixel_spacing
        )
        report = evaluate_run(run_dir, data_dir, output_dir, options)
        Console().print(evaluation_table(report))


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BodycompError(f"{option} {value!r}: choose one of {', '.join(choices)}")


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def evaluation_table(report: dict) -> Table:
    """The rich table of an evaluation report (segmentation or slice selection)."""
    title = f"evaluate {report['run']} on {report['data']} ({report['split']}) -> {report.get('output', '')}"
    if report["task"] == "segmentation":
        unit = report["area_unit"]
        rows = [
            (
                tissue,
                _cell(values["dice_mean"]),
                _cell(values["dice_pooled"]),
                _cell(values[f"area_error_abs_{unit}"], 2),
                _cell(values[f"area_error_signed_{unit}"], 2),
            )
            for tissue, values in report["tissues"].items()
        ]
        columns = ("tissue", "Dice (mean)", "Dice (pooled)", f"|area error| {unit}", f"area error {unit}")
        return _table(title, rows, columns)
    rows = []
    for level, values in report["levels"].items():
        selection = values["selection"] or {}
        rows.append(
            (
                level,
                _cell(values["mae_mm"], 2),
                _cell(selection.get("median_mm"), 2),
                _cell(selection.get("median_slices"), 1),
                _cell(selection.get("within_5mm"), 2),
                _cell(selection.get("within_10mm"), 2),
                str(selection.get("n_series", "-")),
            )
        )
    columns = ("level", "MAE mm (near)", "median error mm", "median slices", "<=5 mm", "<=10 mm", "series")
    return _table(title, rows, columns)
