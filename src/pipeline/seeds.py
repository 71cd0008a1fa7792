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


def event_uniform(event: np.ndarray, salt: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per event number, a function of ``(event, salt)`` alone
    (splitmix64 of ``event + salt``): the same event gets the same number in every file, table and
    simulation type (full and flash), so splits and bootstrap weights follow the generator event."""
    x = np.asarray(event, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x = x + np.uint64(int(salt) % 2**64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def is_holdout(event: np.ndarray, fraction: float) -> np.ndarray:
    """True for the events of a held-out split (FlashSim validation, classifier and trigger test
    sets): a hash of the event number (splitmix64, :func:`event_uniform`) below ``fraction``. The
    same event number is in the same split in every file and table."""
    return event_uniform(event) < float(fraction)


def salt64(master_seed: int, *names: object) -> int:
    """A 64-bit salt for :func:`event_uniform` derived from the master seed and ``names``."""
    return int(seed_sequence(master_seed, *names).generate_state(1, np.uint64)[0])


#: Cumulative Poisson(1) probabilities P(N <= n), n = 0..15 (beyond: probability < 1e-13).
_POISSON1_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, n + 1, dtype=np.float64)) for n in range(16)])


def event_poisson1(event: np.ndarray, salt: int) -> np.ndarray:
    """Poisson(1) bootstrap weights per event number (see :func:`event_uniform`): resampling
    generator events with replacement, identically in every simulation of the same events."""
    return np.searchsorted(_POISSON1_CDF, event_uniform(event, salt), side="right").astype(np.float64)
