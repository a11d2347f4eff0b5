"""phantoms and demo: synthetic CT, and the whole pipeline run on it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bodycomp_cli.commands.common import OverwriteOption, console, report_user_errors, set_malloc_policy


class Anatomy(str, Enum):  # the choices of phantoms.variation.ANATOMIES
    realistic = "realistic"
    classic = "classic"


def register(app: typer.Typer) -> None:
    @app.command("phantoms")
    @report_user_errors
    def phantoms(
        output_dir: Annotated[Path, typer.Argument(help="Folder to create (series/, slices/, manifests).")],
        series: Annotated[int, typer.Option("--series", help="Number of CT series.")] = 20,
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same data (any --workers).")] = 0,
        size: Annotated[int, typer.Option("--size", help="In-plane pixels (square), 32-1024.")] = 512,
        seg_slices: Annotated[
            int, typer.Option("--seg-slices", help="Labelled slices near L3 per series (plus one near T5, T8, T10).")
        ] = 4,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Processes. \\[default: all cores]", show_default=False)
        ] = None,
        variants: Annotated[
            str | None,
            typer.Option(
                "--variants",
                help="Prevalence of each anatomy/scan variant, NAME=P,... (all=P sets every one): ribs_11, "
                "ribs_13, sacralised_l5, lumbarised_s1, arms_down, spinal_metal, hip_metal, scoliosis, fov_cut, "
                "chest_only, pelvis_only. Truth in phantoms.json; see docs/phantoms.md. \\[default: none]",
                show_default=False,
            ),
        ] = None,
        anatomy: Annotated[
            Anatomy,
            typer.Option(
                "--anatomy",
                help="realistic: separate abdominal wall muscles and L3 areas of published adults (docs/"
                "phantoms.md); classic: the thick muscle ring of the phantoms before issue 24.",
            ),
        ] = Anatomy.realistic,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Write synthetic chest/abdomen/pelvis CT series with known levels and tissue labels.

        Example: bodycomp phantoms phantoms/ --series 40 --size 256 --seed 1 --variants arms_down=0.1
        """
        from bodycomp_cli.phantoms import generate_phantoms
        from bodycomp_cli.phantoms.variants import parse_prevalence

        prevalence = parse_prevalence(variants)
        result = generate_phantoms(
            output_dir, series, seed, size, seg_slices, workers, overwrite, variants=prevalence, anatomy=anatomy.value
        )
        splits = ", ".join(f"{count} {name}" for name, count in result.split_counts.items())
        console.print(
            f"Wrote {result.series} series ({splits}; {result.slices} slices) and {result.seg_slices} labelled "
            f"slices to {output_dir} in {result.seconds:.1f} s. Next: bodycomp prepare-slices "
            f"{output_dir}/series.csv SLICES_DIR and bodycomp prepare-seg {output_dir}/seg.csv SEG_DIR"
        )

    @app.command("demo")
    @report_user_errors
    def demo(
        output_dir: Annotated[Path, typer.Argument(help="Folder for everything the demo makes.")] = Path(
            "bodycomp-demo"
        ),
        fast: Annotated[bool, typer.Option("--fast", help="A smoke run of a few minutes (no quality claim).")] = False,
        seed: Annotated[
            int, typer.Option("--seed", help="Other phantoms and another training run of the same settings.")
        ] = 0,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Run the whole pipeline on phantom data on the CPU and report Dice and L3 error.

        Example: bodycomp demo --fast; bodycomp demo demo-seed3 --seed 3
        """
        from bodycomp_cli.demo import run_demo

        set_malloc_policy()  # as train-* and estimate do
        run_demo(output_dir, fast=fast, overwrite=overwrite, seed=seed)
