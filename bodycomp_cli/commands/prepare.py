"""prepare-slices and prepare-seg: thin Typer wrappers around bodycomp_cli.prepare (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bodycomp_cli.commands.common import OverwriteOption, levels_option, report_user_errors
from bodycomp_cli.core.runconfig import Window

ManifestArg = Annotated[Path, typer.Argument(help="CSV manifest (see docs/data-format.md).", show_default=False)]
OutputArg = Annotated[Path, typer.Argument(help="Output folder (built aside, renamed into place).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the random split (used without a split column).")]


def _consoles() -> tuple[Console, Console]:
    # Made at call time so that they write to whatever sys.stdout/sys.stderr are now (CliRunner swaps them).
    return Console(), Console(stderr=True, soft_wrap=True)


def _print_table(console: Console, title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "split" else "right")
    for row in rows:
        table.add_row(*(str(value) for value in row))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("prepare-slices")
    @report_user_errors
    def prepare_slices_command(
        manifest: ManifestArg,
        output_dir: OutputArg,
        levels: levels_option("every z_<LEVEL> and slice_<LEVEL> column of the manifest") = None,
        val_frac: Annotated[float, typer.Option(help="Fraction of series for val (no split column).")] = 0.1,
        test_frac: Annotated[float, typer.Option(help="Fraction of series for test (no split column).")] = 0.1,
        seed: SeedOption = 0,
        window_level: Annotated[
            float, typer.Option(help="Window level (HU) of the 8-bit PNGs, recorded in OUTPUT_DIR/dataset.json.")
        ] = Window().level,
        window_width: Annotated[
            float, typer.Option(help="Window width (HU) of the 8-bit PNGs, recorded in OUTPUT_DIR/dataset.json.")
        ] = Window().width,
        workers: Annotated[
            int | None,
            typer.Option(
                help="Worker processes; output is the same for any N. \\[default: all cores]", show_default=False
            ),
        ] = None,
        vertebra_labels: Annotated[
            str | None,
            typer.Option(
                help="How a 'vertebrae' label volume is numbered: 'totalsegmentator' (v2 total task: 29 L3),"
                " 'verse' (22 L3) or pairs such as 'L3=29,L4=28'. \\[default: none; a centroid JSON is read as verse]",
                show_default=False,
            ),
        ] = None,
        slice_numbers: Annotated[
            str,
            typer.Option(
                help="What a slice_<LEVEL> cell counts: 'index' (0 = the lowest slice, z ascending) or 'instance'"
                " (DICOM InstanceNumber)."
            ),
        ] = "index",
        overwrite: OverwriteOption = False,
    ) -> None:
        """Turn CT series into the slice-selection training layout (images/<split>/*.png, meta/<split>.csv).

        Example: bodycomp prepare-slices series.csv slices/ -L T5 T8 T10 L3 --workers 4
        """
        from bodycomp_cli.prepare.progress import ProgressReporter
        from bodycomp_cli.prepare.slices import prepare_slices

        out, err = _consoles()
        summary = prepare_slices(
            manifest,
            output_dir,
            levels=levels,
            val_frac=val_frac,
            test_frac=test_frac,
            seed=seed,
            window_level=window_level,
            window_width=window_width,
            workers=workers,
            overwrite=overwrite,
            progress=ProgressReporter(err, "prepare-slices", "slices"),
            vertebra_labels=vertebra_labels,
            slice_numbers=slice_numbers,
        )
        rows = [[split, summary.series[split], summary.slices[split]] for split in summary.series]
        _print_table(out, f"{output_dir} ({summary.workers} workers)", ["split", "series", "slices"], rows)

    @app.command("prepare-seg")
    @report_user_errors
    def prepare_seg_command(
        manifest: ManifestArg,
        output_dir: OutputArg,
        val_frac: Annotated[float, typer.Option(help="Fraction of groups (or rows) for val (no split column).")] = 0.2,
        seed: SeedOption = 0,
        size: Annotated[int, typer.Option(help="Output slices are SIZE x SIZE (others are resized).")] = 512,
        thoracic: Annotated[
            bool, typer.Option("-t", "--thoracic", help="Thoracic labels 0-2 (no visceral fat); otherwise 0-3.")
        ] = False,
        window_level: Annotated[
            float,
            typer.Option(
                help="Window level (HU) training applies to the raw-HU arrays, recorded in OUTPUT_DIR/dataset.json."
            ),
        ] = Window().level,
        window_width: Annotated[
            float,
            typer.Option(
                help="Window width (HU) training applies to the raw-HU arrays, recorded in OUTPUT_DIR/dataset.json."
            ),
        ] = Window().width,
        label_map: Annotated[
            str | None,
            typer.Option(
                help="Source labels -> classes, e.g. 'muscle=1,2 subcutaneous_fat=5 visceral_fat=7' (values, or"
                " file/segment/ROI names, spaces allowed: a part runs to the next CLASS=), or a preset:"
                " 'totalsegmentator' (tissue_types file names), 'sliceomatic-alberta' (TAG 1 and 2 (IMAT) muscle,"
                " 5 visceral, 7 subcutaneous fat). \\[default: none: values are already 0-3"
                " (background, muscle, subcutaneous, visceral fat) and names are those classes' names, as"
                " estimate --dicom-seg writes them]",
                show_default=False,
            ),
        ] = None,
        unmapped: Annotated[
            str, typer.Option(help="A present label missing from --label-map: 'refuse' (exit 2) or 'background'.")
        ] = "refuse",
        overwrite: OverwriteOption = False,
    ) -> None:
        """Build the segmentation training arrays (train/val images and masks .npy, N x S x S x 1).

        Masks: .npy/.png, NIfTI, a folder of per-tissue NIfTI masks, DICOM SEG, RTSTRUCT or SliceOmatic .tag
        (docs/data-format.md). Example: bodycomp prepare-seg slices.csv seg_data/ --size 512 --val-frac 0.2
        """
        from bodycomp_cli.prepare.progress import ProgressReporter
        from bodycomp_cli.prepare.seg import prepare_seg

        out, err = _consoles()
        summary = prepare_seg(
            manifest,
            output_dir,
            val_frac=val_frac,
            seed=seed,
            size=size,
            thoracic=thoracic,
            overwrite=overwrite,
            progress=ProgressReporter(err, "prepare-seg", "slices"),
            window_level=window_level,
            window_width=window_width,
            label_map=label_map,
            unmapped=unmapped,
        )
        rows = [[split, count, f"{size}x{size}"] for split, count in summary.items()]
        _print_table(out, str(output_dir), ["split", "slices", "size"], rows)
