"""Names and config checks of the classifiers that the Snakemake rule file needs (no torch import)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from pipeline.errors import ConfigError


def lambda_tag(lam: float) -> str:
    """The plain text of a lambda value in file names: 0 -> "0", 0.5 -> "0.5", 20.0 -> "20"."""
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda must be a finite number >= 0, not {lam}")
    return str(int(lam)) if lam.is_integer() else repr(lam)


def choose_check(ccfg: Mapping) -> float:
    """``classifier.chosen_lambda``, checked to be one of ``classifier.lambdas``."""
    tags = [lambda_tag(v) for v in ccfg["lambdas"]]
    if lambda_tag(ccfg["chosen_lambda"]) not in tags:
        raise ConfigError(f"classifier.chosen_lambda: {ccfg['chosen_lambda']} is not one of classifier.lambdas "
                          f"({', '.join(tags)})")
    return float(ccfg["chosen_lambda"])
