"""Exceptions with messages meant for the physicist who runs the pipeline.

Every error the pipeline raises on bad input names the file, branch or config key and says what
was expected. Scripts catch :class:`PipelineError`, print its message once and exit non-zero.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an error whose message is complete and safe to show to the user as-is."""


class ConfigError(PipelineError):
    """A configuration value is missing or invalid. The message names the key path."""


class InputFileError(PipelineError):
    """An input file is missing, unreadable, truncated, not ROOT/HDF5/parquet, or lacks a tree."""


class MissingBranchError(InputFileError):
    """A tree lacks a branch that the stage needs. The message names the file and the branch(es)."""

    def __init__(self, path: str, tree: str, missing: list[str], stage: str = ""):
        self.path = str(path)
        self.tree = tree
        self.missing = list(missing)
        what = f" needed by {stage}" if stage else ""
        super().__init__(
            f"{path}: tree '{tree}' has no branch {', '.join(repr(m) for m in missing)}{what}"
        )


class MissingColumnError(PipelineError):
    """A table (parquet skim, training table) lacks a column that a stage needs."""


class EmptySelectionError(PipelineError):
    """No event survived a selection, so there is nothing meaningful to write."""
