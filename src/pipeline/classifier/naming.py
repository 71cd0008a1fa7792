"""Names of the classifiers that the Snakemake rule file needs (no torch import).

``classifier.chosen_lambda`` is checked to be one of ``classifier.lambdas`` with the rest of the
config (:func:`pipeline.config.validate_config`).
"""

from __future__ import annotations

import math


def lambda_tag(lam: float) -> str:
    """The plain text of a lambda value in file names: 0 -> "0", 0.5 -> "0.5", 20.0 -> "20"."""
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda must be a finite number >= 0, not {lam}")
    return str(int(lam)) if lam.is_integer() else repr(lam)
