"""The fixed-point types of the trigger firmware and an exact integer model of ``ap_fixed``.

One :class:`FixedType` describes an ``ap_fixed<W, I, Q, O>``: ``W`` bits, ``I`` of them integer
(sign included), quantisation ``Q`` (``AP_TRN``: floor; ``AP_RND``: round half towards +inf) and
overflow ``O`` (``AP_WRAP``: two's-complement wrap; ``AP_SAT``: clamp). A value is stored as the
integer ``v`` with value ``v * 2**-(W - I)``.

:func:`layer_types` gives every type of every Dense layer for a scan width ``W``. The accumulator is
wide enough that products and sums are exact (its fractional bits are those of the input plus those
of the weight; its integer bits cover the worst-case sum), so the only rounding of a layer is the
cast of the exact sum to the result type, which :meth:`FixedType.cast` reproduces bit for bit. The
same types go into the hls4ml configuration and into the Verilog generator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.errors import ConfigError

ROUNDING_MODES = ("AP_TRN", "AP_RND")
OVERFLOW_MODES = ("AP_WRAP", "AP_SAT")


@dataclass(frozen=True)
class FixedType:
    width: int
    integer: int
    rounding: str = "AP_TRN"
    overflow: str = "AP_WRAP"

    def __post_init__(self):
        if self.rounding not in ROUNDING_MODES:
            raise ConfigError(f"fixed-point rounding {self.rounding!r}; expected one of {ROUNDING_MODES}")
        if self.overflow not in OVERFLOW_MODES:
            raise ConfigError(f"fixed-point overflow {self.overflow!r}; expected one of {OVERFLOW_MODES}")
        if self.width < 2 or self.width > 62:
            raise ConfigError(f"fixed-point width {self.width}; expected 2..62 bits")

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def min_int(self) -> int:
        return -(1 << (self.width - 1))

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1

    def hls(self) -> str:
        """The hls4ml precision string, e.g. ``ap_fixed<12,4,AP_RND,AP_SAT>``."""
        return f"ap_fixed<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    def _overflow(self, v: np.ndarray) -> np.ndarray:
        if self.overflow == "AP_SAT":
            return np.clip(v, self.min_int, self.max_int)
        m = np.int64(1) << np.int64(self.width)
        return ((v - self.min_int) % m) + self.min_int

    def cast(self, value: np.ndarray, value_frac: int) -> np.ndarray:
        """Exact cast of integers ``value`` with ``value_frac`` fractional bits to this type's integers."""
        v = np.asarray(value, dtype=np.int64)
        shift = value_frac - self.frac
        if shift > 0:
            if self.rounding == "AP_RND":
                v = v + (np.int64(1) << np.int64(shift - 1))
            v = v >> np.int64(shift)  # arithmetic shift: floor
        elif shift < 0:
            v = v << np.int64(-shift)
        return self._overflow(v)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Integers of floats ``x`` converted to this type (the ``ap_fixed`` constructor from double)."""
        scaled = np.asarray(x, dtype=np.float64) * 2.0**self.frac
        v = np.floor(scaled + 0.5) if self.rounding == "AP_RND" else np.floor(scaled)
        return self._overflow(v.astype(np.int64))

    def to_float(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) * 2.0**-self.frac

    def as_dict(self) -> dict:
        return {**asdict(self), "hls": self.hls()}


@dataclass(frozen=True)
class LayerTypes:
    """Types of one Dense layer (its input is the previous layer's result)."""

    input: FixedType
    weight: FixedType
    bias: FixedType
    accum: FixedType
    result: FixedType
    relu: bool


def accumulator(inp: FixedType, weight: FixedType, bias: FixedType, n_in: int) -> FixedType:
    """An accumulator in which every product and the whole sum (bias included) are exact."""
    frac = inp.frac + weight.frac
    if bias.frac > frac:
        raise ConfigError(f"bias type {bias.hls()} has more fractional bits than input x weight ({frac}); "
                          "raise trigger.hls.integer_bits.bias")
    integer = max(inp.integer + weight.integer - 1, bias.integer) + math.ceil(math.log2(n_in + 1)) + 1
    return FixedType(integer + frac, integer, "AP_TRN", "AP_WRAP")


def layer_types(width: int, hls_cfg: dict, layer_sizes: list[tuple[int, int]]) -> list[LayerTypes]:
    """The types of every Dense layer for scan width ``width`` (``layer_sizes``: (n_in, n_out);
    the last layer is the output, the others are followed by a ReLU)."""
    ib = hls_cfg["integer_bits"]
    q, o = hls_cfg["rounding"], hls_cfg["overflow"]
    data = FixedType(width, int(ib["data"]), q, o)
    out = FixedType(width, int(ib["output"]), q, o)
    weight = FixedType(width, int(ib["weight"]), "AP_RND", "AP_SAT")
    bias = FixedType(width, int(ib["bias"]), "AP_RND", "AP_SAT")
    types = []
    for i, (n_in, _n_out) in enumerate(layer_sizes):
        last = i == len(layer_sizes) - 1
        types.append(LayerTypes(data, weight, bias, accumulator(data, weight, bias, n_in),
                                out if last else data, relu=not last))
    return types


def dense_forward(x_int: np.ndarray, w_int: np.ndarray, b_int: np.ndarray, t: LayerTypes) -> np.ndarray:
    """Bit-exact integer Dense (+ReLU): ``x_int`` (n, n_in) in ``t.input``, ``w_int`` (n_in, n_out)
    in ``t.weight``, ``b_int`` in ``t.bias``; returns (n, n_out) integers of ``t.result``."""
    acc = x_int.astype(np.int64) @ w_int.astype(np.int64)
    acc = acc + (b_int.astype(np.int64) << np.int64(t.accum.frac - t.bias.frac))[None, :]
    res = t.result.cast(acc, t.accum.frac)
    return np.maximum(res, 0) if t.relu else res
