"""The one inference layer: where a trained run runs (Placement, with its one AMP policy) and load_run.

It never names a task: each task (bodycomp_cli.tasks) passes its own model builder to load_run and wraps
the loaded run in its predictor.
"""
