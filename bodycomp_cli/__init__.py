"""bodycomp: CT body composition. The version is defined here only (pyproject.toml reads it)."""

__version__ = "0.1.0"
