"""Open-source RTL of the fixed-point trigger network: Verilog generator, simulation, Yosys.

:func:`generate_verilog` writes a fully parallel pipeline (per Dense layer a register after the
cast and ReLU, and optionally every ``adder_levels_per_stage`` levels of its adder trees) for the integer weights and the :class:`~pipeline.trigger.fixed.LayerTypes`
of :mod:`pipeline.trigger.fixed`, the same types hls4ml was configured with: products and sums are
exact in the accumulator width, then the cast to the result type (``AP_TRN``: arithmetic shift;
``AP_RND``: add half an LSB, shift; ``AP_SAT``: clamp; ``AP_WRAP``: keep the low bits), then ReLU.
Constant multiplications are either shift-and-add trees of the canonical-signed-digit form of
each weight (``shift_add``, no DSPs, what da4ml-like generators do) or plain ``*`` that Yosys may
map to DSP slices (``mul``).

:func:`simulate` runs Icarus Verilog or Verilator on hex test vectors; :func:`synthesize_yosys`
runs ``synth_xilinx`` and parses ``stat`` (LUT/FF/DSP/CARRY counts) and ``ltp -noff`` (the
longest path in cells, i.e. logic levels).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.trigger.fixed import LayerTypes

log = logging.getLogger(__name__)

SIMULATORS = ("iverilog", "verilator")
MULTIPLICATIONS = ("shift_add", "mul")


class ToolError(PipelineError):
    """An RTL tool (iverilog, verilator, yosys) is missing or failed."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"'{name}' is not on PATH; install it (Debian: apt-get install -y verilator yosys iverilog, "
                        "as .ci/run does)")
    return path


def csd_digits(value: int) -> list[tuple[int, int]]:
    """Canonical signed digits of an integer: [(shift, +1 or -1), ...], value = sum(d << shift)."""
    out, k, v = [], 0, int(value)
    while v != 0:
        if v & 1:
            d = 2 - (v & 3)  # +1 if v % 4 == 1, -1 if v % 4 == 3
            out.append((k, d))
            v -= d
        v >>= 1
        k += 1
    return out


def _lit(value: int, width: int) -> str:
    return f"-{width}'sd{-value}" if value < 0 else f"{width}'sd{value}"


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type holding every integer in [lo, hi]."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def _adder_tree(terms: list[tuple[int, str, int, int]], prefix: str, lines: list[str],
                levels_per_stage: int = 0) -> tuple[str, int, int, int]:
    """A balanced tree of two-input adders over terms (sign, expression, lo, hi), where [lo, hi] is
    the range of the expression. Each adder output is a ``(* keep *)`` wire exactly as wide as its
    range needs, so Yosys maps it to one short carry chain instead of merging the whole sum into a
    multi-operand ``$macc`` (whose full-adder compressor costs far more LUTs).
    With ``levels_per_stage`` > 0, every node is registered after each ``levels_per_stage`` adder
    levels (while more levels follow). Returns (expression of the sum, lo, hi, register stages)."""
    if not terms:
        return "1'sd0", 0, 0, 0
    level, n, depth, stages = list(terms), 0, 0, 0
    while len(level) > 1:
        nxt = []
        for k in range(0, len(level) - 1, 2):
            (s1, e1, lo1, hi1), (s2, e2, lo2, hi2) = level[k], level[k + 1]
            if s1 == s2:
                expr, sign, lo, hi = f"{e1} + {e2}", s1, lo1 + lo2, hi1 + hi2
            elif s1 > 0:
                expr, sign, lo, hi = f"{e1} - {e2}", 1, lo1 - hi2, hi1 - lo2
            else:
                expr, sign, lo, hi = f"{e2} - {e1}", 1, lo2 - hi1, hi2 - lo1
            name = f"{prefix}_{n}"
            n += 1
            lines.append(f"  (* keep *) wire signed [{signed_bits(lo, hi) - 1}:0] {name} = {expr};")
            nxt.append((sign, name, lo, hi))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
        if levels_per_stage and depth % levels_per_stage == 0 and len(level) > 1:
            staged = []
            for sign, expr, lo, hi in level:
                name = f"{prefix}_r{n}"
                n += 1
                lines.append(f"  reg signed [{signed_bits(lo, hi) - 1}:0] {name};")
                lines.append(f"  always @(posedge clk) {name} <= {expr};")
                staged.append((sign, name, lo, hi))
            level = staged
            stages += 1
    sign, expr, lo, hi = level[0]
    return (expr, lo, hi, stages) if sign > 0 else (f"-{expr}", -hi, -lo, stages)


def generate_verilog(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], types: Sequence[LayerTypes],
                     module: str = "trigger_nn", multiplication: str = "shift_add",
                     adder_levels_per_stage: int = 0) -> tuple[str, int]:
    """Verilog of the network: ``weights[l]`` (n_in, n_out) and ``biases[l]`` (n_out) are integers of
    ``types[l].weight`` / ``types[l].bias``. Ports: ``clk``, ``rst``, ``in_valid``, ``x`` (input i in
    bits ``[W*i +: W]``, two's complement of ``types[0].input``), ``out_valid``, ``y`` (the output's
    integers); one new input per cycle. ``adder_levels_per_stage`` > 0 registers the adder trees every
    that many levels (all outputs of a layer padded to the same number of stages). Returns the
    Verilog and its latency in cycles (register stages from ``x`` to ``y``)."""
    if multiplication not in MULTIPLICATIONS:
        raise PipelineError(f"trigger.rtl.multiplication {multiplication!r}; expected one of {MULTIPLICATIONS}")
    n_layers = len(weights)
    n_in = weights[0].shape[0]
    w_in = types[0].input.width
    w_out = types[-1].result.width
    lines = [
        f"// Generated by pipeline.trigger.rtl: {n_layers} Dense layers, multiplication {multiplication}, "
        f"adder levels per stage {adder_levels_per_stage or 'unlimited'}.",
        f"// Types: " + "; ".join(f"layer {i}: in {t.input.hls()} w {t.weight.hls()} b {t.bias.hls()} "
                                  f"acc {t.accum.hls()} out {t.result.hls()}{' relu' if t.relu else ''}"
                                  for i, t in enumerate(types)),
        f"module {module} (",
        "  input  wire clk,",
        "  input  wire rst,",
        "  input  wire in_valid,",
        f"  input  wire [{n_in * w_in - 1}:0] x,",
        "  output wire out_valid,",
        f"  output wire [{w_out - 1}:0] y",
        ");",
    ]
    for i in range(n_in):
        lines.append(f"  wire signed [{w_in - 1}:0] l0_{i} = x[{w_in * i} +: {w_in}];")
    latency = 0
    for li, (w, b, t) in enumerate(zip(weights, biases, types)):
        aw, af = t.accum.width, t.accum.frac
        nin, nout = w.shape
        lines.append(f"  // layer {li}: Dense {nin} -> {nout}{' + ReLU' if t.relu else ''}")
        # range of the layer's inputs (ReLU outputs are >= 0)
        x_lo = 0 if li > 0 and types[li - 1].relu else t.input.min_int
        x_hi = t.input.max_int
        rw, rf = t.result.width, t.result.frac
        shift = af - rf
        sums = []
        for j in range(nout):
            terms: list[tuple[int, str, int, int]] = []
            bias = int(b[j]) << (af - t.bias.frac)
            if bias:
                terms.append((1 if bias > 0 else -1, f"{signed_bits(abs(bias), abs(bias))}'sd{abs(bias)}",
                              abs(bias), abs(bias)))
            for i in range(nin):
                wij = int(w[i, j])
                if wij == 0:
                    continue
                x = f"l{li}_{i}"
                if multiplication == "mul":
                    m = abs(wij)
                    terms.append((1 if wij > 0 else -1, f"({x} * {signed_bits(m, m)}'sd{m})", x_lo * m, x_hi * m))
                else:
                    for k, d in csd_digits(wij):
                        terms.append((d, f"({x} <<< {k})" if k else x, x_lo << k, x_hi << k))
            total, lo, hi, stages = _adder_tree(terms, f"a{li}_s{j}", lines, adder_levels_per_stage)
            if signed_bits(lo, hi) > aw:
                raise AssertionError(f"layer {li} output {j}: sum range [{lo}, {hi}] exceeds the accumulator {t.accum.hls()}")
            sums.append((total, stages))
        layer_stages = max(st for _, st in sums)
        latency += layer_stages + 1
        for j, (total, stages) in enumerate(sums):
            for d in range(layer_stages - stages):  # pad to the layer's number of stages
                lines.append(f"  reg signed [{aw - 1}:0] a{li}_d{j}_{d};")
                lines.append(f"  always @(posedge clk) a{li}_d{j}_{d} <= {total};")
                total = f"a{li}_d{j}_{d}"
            lines.append(f"  wire signed [{aw - 1}:0] a{li}_acc{j} = {total};")
        for j in range(nout):
            if shift > 0:
                rnd = f" + {aw}'sd{1 << (shift - 1)}" if t.result.rounding == "AP_RND" else ""
                lines.append(f"  wire signed [{aw - 1}:0] a{li}_sh{j} = (a{li}_acc{j}{rnd}) >>> {shift};")
            else:
                lines.append(f"  wire signed [{aw - 1}:0] a{li}_sh{j} = a{li}_acc{j} <<< {-shift};")
            if t.result.overflow == "AP_SAT":
                hi, lo = _lit(t.result.max_int, aw), _lit(t.result.min_int, aw)
                lines.append(f"  wire signed [{rw - 1}:0] a{li}_q{j} = (a{li}_sh{j} > {hi}) ? {_lit(t.result.max_int, rw)} : "
                             f"(a{li}_sh{j} < {lo}) ? {_lit(t.result.min_int, rw)} : a{li}_sh{j}[{rw - 1}:0];")
            else:
                lines.append(f"  wire signed [{rw - 1}:0] a{li}_q{j} = a{li}_sh{j}[{rw - 1}:0];")
            value = f"(a{li}_q{j}[{rw - 1}] ? {rw}'sd0 : a{li}_q{j})" if t.relu else f"a{li}_q{j}"
            lines.append(f"  reg signed [{rw - 1}:0] l{li + 1}_{j};")
            lines.append(f"  always @(posedge clk) l{li + 1}_{j} <= {value};")
    lines += [
        f"  // latency {latency} cycles",
        f"  reg [{latency - 1}:0] valid_pipe;",
        "  always @(posedge clk)",
        f"    if (rst) valid_pipe <= {latency}'d0;",
        (f"    else valid_pipe <= {{valid_pipe[{latency - 2}:0], in_valid}};" if latency > 1
         else "    else valid_pipe <= in_valid;"),
        f"  assign out_valid = valid_pipe[{latency - 1}];",
        f"  assign y = l{n_layers}_0;",
        "endmodule",
        "",
    ]
    return "\n".join(lines), latency


def testbench(module: str, n_in: int, w_in: int, w_out: int, n_vectors: int, latency: int) -> str:
    """A testbench that feeds ``inputs.hex`` one vector per cycle and writes ``outputs.hex``."""
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 0;
  reg rst = 1;
  reg in_valid = 0;
  reg [{n_in * w_in - 1}:0] x = 0;
  wire out_valid;
  wire [{w_out - 1}:0] y;
  reg [{n_in * w_in - 1}:0] vectors [0:{n_vectors - 1}];
  integer fd, i;
  {module} dut (.clk(clk), .rst(rst), .in_valid(in_valid), .x(x), .out_valid(out_valid), .y(y));
  always #5 clk = ~clk;
  always @(negedge clk) if (out_valid) $fwrite(fd, "%h\\n", y);
  initial begin
    $readmemh("inputs.hex", vectors);
    fd = $fopen("outputs.hex", "w");
    repeat (2) @(negedge clk);
    rst = 0;
    for (i = 0; i < {n_vectors}; i = i + 1) begin
      @(negedge clk);
      x = vectors[i];
      in_valid = 1;
    end
    @(negedge clk);
    in_valid = 0;
    repeat ({latency + 2}) @(negedge clk);
    $fclose(fd);
    $finish;
  end
endmodule
"""


def pack_vectors(x_int: np.ndarray, width: int) -> list[str]:
    """Hex lines of input vectors: input i in bits [width*i +: width], two's complement."""
    mask = (1 << width) - 1
    digits = (x_int.shape[1] * width + 3) // 4
    out = []
    for row in np.asarray(x_int, dtype=np.int64):
        v = 0
        for i, xi in enumerate(row):
            v |= (int(xi) & mask) << (width * i)
        out.append(f"{v:0{digits}x}")
    return out


def unpack_outputs(lines: Sequence[str], width: int) -> np.ndarray:
    vals = []
    for line in lines:
        v = int(line, 16)
        vals.append(v - (1 << width) if v >> (width - 1) else v)
    return np.array(vals, dtype=np.int64)


def _run(cmd: list[str], cwd: Path, what: str, timeout: float) -> str:
    log.info("%s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what} did not finish within {timeout:.0f} s ({' '.join(cmd)})") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise ToolError(f"{what} failed (exit {proc.returncode}) in {cwd}: {tail}")
    return out


def simulate(verilog_path: str, module: str, x_int: np.ndarray, w_in: int, w_out: int, latency: int,
             work_dir: str, simulator: str = "iverilog", timeout: float = 1200) -> np.ndarray:
    """Simulate the network on integer input vectors (n, n_in); returns the output integers (n,)."""
    if simulator not in SIMULATORS:
        raise PipelineError(f"trigger.rtl.simulator {simulator!r}; expected one of {SIMULATORS}")
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    n = len(x_int)
    (wd / "inputs.hex").write_text("\n".join(pack_vectors(x_int, w_in)) + "\n")
    (wd / "tb.v").write_text(testbench(module, x_int.shape[1], w_in, w_out, n, latency))
    src = [str(Path(verilog_path).resolve()), "tb.v"]
    if simulator == "iverilog":
        _run([require_tool("iverilog"), "-g2012", "-o", "sim.vvp", "-s", "tb", *src], wd, "iverilog", timeout)
        _run([require_tool("vvp"), "-n", "sim.vvp"], wd, "vvp", timeout)
    else:
        _run([require_tool("verilator"), "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
              "--top-module", "tb", "-o", "sim", "-j", "1", *src], wd, "verilator build", timeout)
        _run([str(wd / "obj_dir" / "sim")], wd, "verilator simulation", timeout)
    lines = [ln for ln in (wd / "outputs.hex").read_text().split() if ln]
    if len(lines) != n:
        raise ToolError(f"{simulator}: {len(lines)} outputs for {n} input vectors ({wd / 'outputs.hex'})")
    return unpack_outputs(lines, w_out)


_STAT_LINE = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")
_LTP = re.compile(r"Longest topological path in \S+ \(length=(\d+)\)")


def parse_yosys_stat(text: str) -> dict:
    """Cell counts of a ``stat`` report -> {luts, ffs, dsps, carries, brams, cells: {type: n}}."""
    cells: dict[str, int] = {}
    for line in text.splitlines():
        m = _STAT_LINE.match(line)
        if m and not m.group(1).startswith("Number"):
            cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    def total(prefixes):
        return int(sum(n for c, n in cells.items() if c.startswith(prefixes)))
    return {
        "luts": total(("LUT",)),
        "ffs": total(("FD",)),
        "dsps": total(("DSP48",)),
        "carries": total(("CARRY",)),
        "brams": total(("RAMB",)),
        "cells": cells,
    }


def parse_yosys_ltp(text: str) -> int:
    m = _LTP.search(text)
    if m is None:
        raise ToolError("yosys ltp: no 'Longest topological path' line in its output")
    return int(m.group(1))


def synthesize_yosys(verilog_path: str, module: str, work_dir: str, family: str = "xcup", use_dsp: bool = False,
                     timeout: float = 1800) -> dict:
    """``synth_xilinx -flatten``; returns :func:`parse_yosys_stat` plus ``logic_levels`` (``ltp -noff``)."""
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    script = "\n".join([
        f"read_verilog {Path(verilog_path).resolve()}",
        f"synth_xilinx -flatten -top {module} -family {family}{'' if use_dsp else ' -nodsp'}",
        "tee -q -o stat.txt stat",
        "tee -q -o ltp.txt ltp -noff",
        "",
    ])
    (wd / "synth.ys").write_text(script)
    _run([require_tool("yosys"), "-q", "-l", "yosys.log", "synth.ys"], wd, "yosys synth_xilinx", timeout)
    out = parse_yosys_stat((wd / "stat.txt").read_text())
    out["logic_levels"] = parse_yosys_ltp((wd / "ltp.txt").read_text())
    return out
