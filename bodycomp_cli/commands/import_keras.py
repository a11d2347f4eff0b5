"""import-keras: a thin Typer command over bodycomp_cli.tasks.keras_import (torch is imported inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bodycomp_cli.commands.common import OverwriteOption, console, levels_option, report_user_errors


def register(app: typer.Typer) -> None:
    @app.command("import-keras")
    @report_user_errors
    def import_keras_command(
        model: Annotated[
            Path,
            typer.Argument(
                help="A Keras .hdf5 model saved by the original toolkit (config inside), or its weights file with "
                "architecture.json beside it.",
                show_default=False,
            ),
        ],
        models_dir: Annotated[
            Path, typer.Argument(help="Folder that receives the run folder NAME/.", show_default=False)
        ],
        name: Annotated[str, typer.Option("-a", "--name", help="Run folder name.", show_default=False)],
        architecture: Annotated[
            Path | None,
            typer.Option(
                "--architecture",
                help="The architecture.json of a weights-only file \\[default: beside it]",
                show_default=False,
            ),
        ] = None,
        args: Annotated[
            Path | None,
            typer.Option(
                "--args",
                help="The args.json the original wrote (levels, threshold) \\[default: beside it, if there]",
                show_default=False,
            ),
        ] = None,
        levels: levels_option("args.json's, else L3 for one output") = None,
        threshold: Annotated[
            float | None,
            typer.Option(
                "-t",
                "--threshold",
                help="Slice selection: the sigmoid scale in mm \\[default: args.json's, else 10]",
                show_default=False,
            ),
        ] = None,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Turn a model trained by the original Keras toolkit into a run folder for estimate, evaluate and training.

        Example: bodycomp import-keras segmentation_unet_d5_i16_c1.hdf5 models/ -a l3_seg
        """
        from bodycomp_cli.tasks.keras_import import import_keras

        run_dir = import_keras(model, models_dir, name, architecture, args, levels, threshold, overwrite)
        console.print(f"imported {model} into {run_dir}", highlight=False)
