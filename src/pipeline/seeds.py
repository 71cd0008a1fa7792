"""Seeds derived from the one master seed in the config.

Every stochastic step gets its own independent stream, derived from ``config['seed']`` and
the names of what it works on (sample, chunk, model, ...), so that adding a sample or a chunk
does not change the random numbers of the others, and the same config gives the same outputs.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(part: object) -> int:
    if isinstance(part, (int, np.integer)):
        return int(part)
    return zlib.crc32(str(part).encode())


def seed_sequence(master_seed: int, *names: object) -> np.random.SeedSequence:
    """A :class:`numpy.random.SeedSequence` for ``names`` under ``master_seed``."""
    return np.random.SeedSequence([int(master_seed), *(_key(n) for n in names)])


def rng(master_seed: int, *names: object) -> np.random.Generator:
    """An independent numpy Generator for the step named by ``names``."""
    return np.random.default_rng(seed_sequence(master_seed, *names))


def int_seed(master_seed: int, *names: object, high: int = 900_000_000) -> int:
    """An integer seed in ``[1, high)`` (Pythia8 accepts at most 900 000 000)."""
    return 1 + int(seed_sequence(master_seed, *names).generate_state(1, np.uint64)[0] % (high - 1))
