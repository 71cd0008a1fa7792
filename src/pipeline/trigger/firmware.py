"""hls4ml firmware of a trigger model: conversion, bit-accurate C-simulation, precision scan,
resource / latency estimates, open-source RTL check, ``metrics.json``.

Precision scheme (one scan width ``W``, :func:`pipeline.trigger.fixed.layer_types`): inputs and
hidden activations ``ap_fixed<W, integer_bits.data>``, the output ``ap_fixed<W, integer_bits.output>``,
weights ``ap_fixed<W, integer_bits.weight>``, biases ``ap_fixed<W, integer_bits.bias>``, exact
accumulators. Weights and biases are rounded to their type in Python before conversion (so the
values hls4ml writes are exact), inputs are rounded to the input type before ``predict`` (the
hardware gets them that way). The *chosen* width is ``hls.chosen_width`` or, when that is null,
the smallest scanned width whose C-simulation AUC is within ``hls.auc_tolerance`` of the float AUC.

Estimates that need no vendor tool (``resources`` in metrics.json): per Dense layer the
multiplications (non-zero quantised weights, a multiplier each at reuse factor 1), the DSP upper
bound ``ceil(multiplications / reuse_factor)`` (Vivado maps narrow constant products to LUTs, so
fewer in practice), the adder-tree depth ``ceil(log2(terms))`` and a latency estimate of hls4ml's
``io_parallel`` / ``Latency`` pipeline: per layer ``reuse_factor`` cycles of multiplication plus
``ceil(adder_tree_depth / adder_levels_per_cycle)`` cycles of adder tree (the ReLU is a comparator
folded into the same stage). The measured figures are those of the open-source RTL
(:mod:`pipeline.trigger.rtl`): Yosys LUT/FF/DSP counts, logic levels of the longest path and the
pipeline depth ``latency_cycles``.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.errors import ConfigError
from pipeline.trigger import inputs as tin
from pipeline.trigger import rtl
from pipeline.trigger.fixed import LayerTypes, dense_forward, layer_types
from pipeline.trigger.model import dense_layers, efficiency_at_background, float_scores, load_model, weighted_auc

log = logging.getLogger(__name__)

PROJECT_NAME = "trigger_nn"
VERILOG_MODULE = "trigger_nn"
HLS_TOOLS = ("vitis_hls", "vivado_hls", "vivado")


# --------------------------------------------------------------------------------------------
# quantisation
# --------------------------------------------------------------------------------------------
def layer_sizes(net) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for _, m in dense_layers(net)]


def quantize_network(net, types: list[LayerTypes]):
    """Integer weights (n_in, n_out) and biases per Dense layer, and a copy of ``net`` whose float
    parameters are exactly those fixed-point values."""
    qnet = copy.deepcopy(net)
    w_ints, b_ints = [], []
    for (_, layer), t in zip(dense_layers(qnet), types):
        w = t.weight.quantize(layer.weight.detach().double().numpy().T)
        b = t.bias.quantize(layer.bias.detach().double().numpy())
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(t.weight.to_float(w).T))
            layer.bias.copy_(torch.from_numpy(t.bias.to_float(b)))
        w_ints.append(w)
        b_ints.append(b)
    return w_ints, b_ints, qnet


def emulate(x_int: np.ndarray, w_ints, b_ints, types: list[LayerTypes]) -> np.ndarray:
    """The integer model of the firmware (:func:`pipeline.trigger.fixed.dense_forward` per layer)."""
    a = np.asarray(x_int, dtype=np.int64)
    for w, b, t in zip(w_ints, b_ints, types):
        a = dense_forward(a, w, b, t)
    return a[:, 0]


# --------------------------------------------------------------------------------------------
# hls4ml
# --------------------------------------------------------------------------------------------
def hls_config(net, types: list[LayerTypes], hcfg: Mapping, n_inputs: int) -> dict:
    """hls4ml configuration with every precision set explicitly (granularity 'name')."""
    import hls4ml

    cfg = hls4ml.utils.config_from_pytorch_model(
        net, input_shape=(n_inputs,), granularity="name", backend=hcfg["backend"],
        default_precision=types[0].input.hls(), default_reuse_factor=int(hcfg["reuse_factor"]))
    cfg["Model"]["Strategy"] = hcfg["strategy"]
    cfg["Model"]["ReuseFactor"] = int(hcfg["reuse_factor"])
    dense = dict(zip([n for n, _ in dense_layers(net)], types))
    for name, layer in cfg["LayerName"].items():
        if name in dense:
            t = dense[name]
            layer["Precision"] = {"weight": t.weight.hls(), "bias": t.bias.hls(), "accum": t.accum.hls(),
                                  "result": t.result.hls()}
            layer["ReuseFactor"] = int(hcfg["reuse_factor"])
        elif name.startswith("relu"):
            layer["Precision"] = {"result": types[0].input.hls()}
        else:  # the input layer
            layer["Precision"] = {"result": types[0].input.hls()}
    return cfg


def convert(net, types: list[LayerTypes], hcfg: Mapping, n_inputs: int, output_dir: str):
    """``convert_from_pytorch_model`` into ``output_dir`` (backend, part, clock, io type from ``hcfg``)."""
    import hls4ml

    cfg = hls_config(net, types, hcfg, n_inputs)
    return hls4ml.converters.convert_from_pytorch_model(
        net, output_dir=str(output_dir), project_name=PROJECT_NAME, backend=hcfg["backend"], hls_config=cfg,
        io_type=hcfg["io_type"], part=hcfg["part"], clock_period=float(hcfg["clock_period_ns"]))


def csim(hls_model, x_int: np.ndarray, types: list[LayerTypes]) -> np.ndarray:
    """``compile()`` + ``predict()``: the C-simulation's output integers for integer inputs."""
    hls_model.compile()
    x = types[0].input.to_float(x_int).astype(np.float32)
    y = np.asarray(hls_model.predict(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(x), -1)[:, 0]
    scaled = y * 2.0 ** types[-1].result.frac
    y_int = np.round(scaled).astype(np.int64)
    if not np.array_equal(y_int, scaled):
        raise AssertionError("C-simulation output is not on the output type's grid")
    return y_int


# --------------------------------------------------------------------------------------------
# estimates
# --------------------------------------------------------------------------------------------
def resource_estimates(w_ints, types: list[LayerTypes], hcfg: Mapping) -> dict:
    rf = int(hcfg["reuse_factor"])
    per_layer, latency = [], 0
    for li, (w, t) in enumerate(zip(w_ints, types)):
        nnz = int(np.count_nonzero(w))
        terms = int(np.count_nonzero(w, axis=0).max()) + 1  # + bias
        depth = math.ceil(math.log2(terms)) if terms > 1 else 0
        cycles = rf + math.ceil(depth / int(hcfg["adder_levels_per_cycle"]))
        latency += cycles
        per_layer.append({
            "layer": li, "n_in": int(w.shape[0]), "n_out": int(w.shape[1]), "multiplications": nnz,
            "dsp_upper_bound": math.ceil(nnz / rf), "adder_tree_depth": depth, "latency_estimate_cycles": cycles,
            "product_bits": t.input.width + t.weight.width, "accumulator": t.accum.hls(),
        })
    return {
        "reuse_factor": rf,
        "layers": per_layer,
        "multiplications": sum(p["multiplications"] for p in per_layer),
        "dsp_upper_bound": sum(p["dsp_upper_bound"] for p in per_layer),
        "hls_latency_estimate_cycles": latency,
    }


# --------------------------------------------------------------------------------------------
# the firmware step
# --------------------------------------------------------------------------------------------
def _test_set(inputs_path: str, tcfg: Mapping, max_vectors: int | None):
    table = tin.load_inputs(inputs_path, tcfg)
    test = table[table["is_test"].to_numpy()].reset_index(drop=True)
    if max_vectors and len(test) > max_vectors:
        test = test.iloc[:max_vectors].reset_index(drop=True)
    if test["is_signal"].nunique() < 2:
        raise ConfigError(f"{inputs_path}: the test split needs signal and background events "
                          f"(trigger.test_fraction {tcfg['test_fraction']})")
    return test


def choose_width(scan: list[dict], hcfg: Mapping) -> int:
    # validate_config checked that a chosen width is one of hls.widths (the widths of the scan)
    if hcfg["chosen_width"] is not None:
        return int(hcfg["chosen_width"])
    ok = [s["width"] for s in scan if abs(s["auc_fixed"] - s["auc_float"]) <= float(hcfg["auc_tolerance"])]
    return min(ok) if ok else max(s["width"] for s in scan)


def build_firmware(model_name: str, model_path: str, inputs_path: str, out_dir: str, tcfg: Mapping,
                   plots_cfg: Mapping, tracked=None, work_dir: str | None = None, plots: bool = True) -> dict:
    """The whole firmware step of one model; writes into ``out_dir``: ``hls4ml_prj/`` (the HLS project
    at the chosen width, ready for the vendor tool), ``rtl/trigger_nn.v``, ``scan.json``, plots and
    ``metrics.json``. Returns the metrics. ``tcfg`` is the config block ``trigger``, ``plots_cfg``
    the block ``plots`` (its ``label``)."""
    hcfg, rcfg = tcfg["hls"], tcfg["rtl"]
    torch.set_num_threads(int(tcfg["threads"]))
    net, ckpt = load_model(model_path)
    if ckpt["features"] != tin.feature_names(tcfg):
        raise ConfigError(f"{model_path}: trained on features {ckpt['features']}, the config gives "
                          f"{tin.feature_names(tcfg)}; retrain (train_trigger)")
    test = _test_set(inputs_path, tcfg, tcfg.get("max_test_vectors"))
    x_float = tin.network_inputs(test, tcfg)
    y, wgt = test["is_signal"].to_numpy(), test["weight"].to_numpy()
    target = float(tcfg["target_background_efficiency"])
    s_float = float_scores(net, x_float)
    auc_float = weighted_auc(s_float, y, wgt)
    eff_float = efficiency_at_background(s_float, y, wgt, target)
    sizes = layer_sizes(net)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="trigger_fw_", dir=work_dir))
    try:
        scan, models = [], {}
        for width in [int(w) for w in hcfg["widths"]]:
            t0 = time.perf_counter()
            types = layer_types(width, hcfg, sizes)
            w_ints, b_ints, qnet = quantize_network(net, types)
            x_int = types[0].input.quantize(x_float)
            hls_model = convert(qnet, types, hcfg, x_float.shape[1], str(tmp_root / f"w{width}"))
            y_csim = csim(hls_model, x_int, types)
            y_emul = emulate(x_int, w_ints, b_ints, types)
            s_fixed = types[-1].result.to_float(y_csim)
            eff = efficiency_at_background(s_fixed, y, wgt, target)
            row = {
                "width": width,
                "types": {"input": types[0].input.hls(), "weight": types[0].weight.hls(),
                          "bias": types[0].bias.hls(), "output": types[-1].result.hls()},
                "auc_float": auc_float,
                "auc_fixed": weighted_auc(s_fixed, y, wgt),
                "signal_efficiency_float": eff_float["signal_efficiency"],
                "signal_efficiency_fixed": eff["signal_efficiency"],
                "background_efficiency_fixed": eff["background_efficiency"],
                "csim_emulation_mismatches": int(np.count_nonzero(y_csim != y_emul)),
                "seconds": time.perf_counter() - t0,
            }
            log.info("precision scan W=%d: AUC fixed %.4f (float %.4f), eff_S %.3f (float %.3f), "
                     "C-sim vs integer emulation mismatches %d, %.1f s", width, row["auc_fixed"], auc_float,
                     row["signal_efficiency_fixed"], eff_float["signal_efficiency"],
                     row["csim_emulation_mismatches"], row["seconds"])
            scan.append(row)
            models[width] = (types, w_ints, b_ints, x_int, y_csim)
            if tracked is not None:
                tracked.log_metrics({"scan_auc_fixed": row["auc_fixed"],
                                     "scan_signal_efficiency_fixed": row["signal_efficiency_fixed"]}, step=width)
        chosen = choose_width(scan, hcfg)
        types, w_ints, b_ints, x_int, y_csim = models[chosen]
        chosen_row = next(s for s in scan if s["width"] == chosen)
        prj = out / "hls4ml_prj"
        shutil.rmtree(prj, ignore_errors=True)
        shutil.copytree(tmp_root / f"w{chosen}", prj, ignore=shutil.ignore_patterns("*.so", "*.o"))

        # ---- open-source RTL -----------------------------------------------------------------
        rtl_dir = out / "rtl"
        rtl_dir.mkdir(exist_ok=True)
        vpath = rtl_dir / f"{VERILOG_MODULE}.v"
        verilog, latency = rtl.generate_verilog(w_ints, b_ints, types, VERILOG_MODULE, rcfg["multiplication"],
                                                int(rcfg["adder_levels_per_stage"]))
        with io.atomic_output(vpath) as tmp:
            tmp.write_text(verilog)
        t0 = time.perf_counter()
        y_rtl = rtl.simulate(str(vpath), VERILOG_MODULE, x_int, types[0].input.width, types[-1].result.width,
                             latency, str(tmp_root / "sim"), rcfg["simulator"])
        sim_s = time.perf_counter() - t0
        mismatches = int(np.count_nonzero(y_rtl != y_csim))
        t0 = time.perf_counter()
        synth = rtl.synthesize_yosys(str(vpath), VERILOG_MODULE, str(tmp_root / "yosys"), rcfg["yosys_family"],
                                     bool(rcfg["use_dsp"]))
        synth_s = time.perf_counter() - t0
        shutil.copy(tmp_root / "yosys" / "stat.txt", rtl_dir / "yosys_stat.txt")
        shutil.copy(tmp_root / "yosys" / "ltp.txt", rtl_dir / "yosys_ltp.txt")

        clock = float(hcfg["clock_period_ns"])
        metrics = {
            "model": model_name,
            "chosen_width": chosen,
            "chosen_types": chosen_row["types"],
            "auc_float": auc_float,
            "auc_fixed": chosen_row["auc_fixed"],
            "auc_difference": chosen_row["auc_fixed"] - auc_float,
            "auc_within_tolerance": abs(chosen_row["auc_fixed"] - auc_float) <= float(hcfg["auc_tolerance"]),
            "target_background_efficiency": target,
            "signal_efficiency_float": eff_float["signal_efficiency"],
            "signal_efficiency_fixed": chosen_row["signal_efficiency_fixed"],
            "background_efficiency_float": eff_float["background_efficiency"],
            "background_efficiency_fixed": chosen_row["background_efficiency_fixed"],
            "n_test_vectors": int(len(x_int)),
            "csim_emulation_mismatches": chosen_row["csim_emulation_mismatches"],
            "csim_rtl_mismatches": mismatches,
            "rtl_simulator": rcfg["simulator"],
            "rtl_multiplication": rcfg["multiplication"],
            "luts": synth["luts"],
            "ffs": synth["ffs"],
            "dsps": synth["dsps"],
            "carries": synth["carries"],
            "logic_levels": synth["logic_levels"],
            "latency_cycles": latency,
            "clock_period_ns": clock,
            "latency_ns": latency * clock,
            "latency_within_limit": latency <= int(rcfg["max_latency_cycles"]),
            "yosys_family": rcfg["yosys_family"],
            "yosys_cells": synth["cells"],
            "resources": resource_estimates(w_ints, types, hcfg),
            "hls": {k: hcfg[k] for k in ("backend", "part", "clock_period_ns", "reuse_factor", "strategy", "io_type")},
            "rtl_simulation_seconds": sim_s,
            "yosys_seconds": synth_s,
            "scan": scan,
        }
        io.write_json(out / "scan.json", scan)
        if plots:
            plot_scan(scan, auc_float, eff_float["signal_efficiency"], target, chosen, out / "precision_scan.png",
                      plots_cfg)
        io.write_json(out / "metrics.json", metrics)
        if tracked is not None:
            tracked.log_metrics({k: float(metrics[k]) for k in (
                "auc_float", "auc_fixed", "csim_rtl_mismatches", "csim_emulation_mismatches", "luts", "ffs", "dsps",
                "logic_levels", "latency_cycles", "chosen_width", "signal_efficiency_float",
                "signal_efficiency_fixed", "n_test_vectors")})
            tracked.log_metrics({"hls_latency_estimate_cycles": metrics["resources"]["hls_latency_estimate_cycles"],
                                 "multiplications": metrics["resources"]["multiplications"],
                                 "dsp_upper_bound": metrics["resources"]["dsp_upper_bound"]})
            tracked.log_artifact(str(out / "metrics.json"))
            tracked.log_artifact(str(vpath), "rtl")
            if plots:
                tracked.log_artifact(str(out / "precision_scan.png"))
        log.info("firmware %s: W=%d AUC float %.4f fixed %.4f, RTL vs C-sim mismatches %d/%d, LUT %d FF %d DSP %d, "
                 "latency %d cycles, %d logic levels", model_name, chosen, auc_float, metrics["auc_fixed"], mismatches,
                 len(x_int), metrics["luts"], metrics["ffs"], metrics["dsps"], latency, metrics["logic_levels"])
        return metrics
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def plot_scan(scan: list[dict], auc_float: float, eff_float: float, target: float, chosen: int, path,
              plots_cfg: Mapping) -> str:
    """AUC and signal efficiency at the fixed background efficiency vs the fixed-point width."""
    import matplotlib.pyplot as plt

    from pipeline import plotting

    with plotting.style():
        widths = [s["width"] for s in scan]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"hspace": 0.08})
        plotting.experiment_label(ax1, plots_cfg.get("label"))
        ax1.plot(widths, [s["auc_fixed"] for s in scan], "o-", label="C-simulation (ap_fixed)")
        ax1.axhline(auc_float, color="k", ls="--", label="float model")
        ax1.axvline(chosen, color="0.6", ls=":", label=f"chosen W = {chosen}")
        ax1.set_ylabel("ROC AUC")
        ax1.legend()
        ax2.plot(widths, [s["signal_efficiency_fixed"] for s in scan], "o-", label="C-simulation (ap_fixed)")
        ax2.axhline(eff_float, color="k", ls="--", label="float model")
        ax2.axvline(chosen, color="0.6", ls=":")
        ax2.set_ylabel(rf"$\varepsilon_S$ at $\varepsilon_B$ = {target:g}")
        ax2.set_xlabel("total bits W of ap_fixed<W, I>")
        ax2.legend()
        return plotting.save(fig, path)


# --------------------------------------------------------------------------------------------
# vendor synthesis
# --------------------------------------------------------------------------------------------
def vendor_tool() -> str | None:
    for tool in HLS_TOOLS:
        if shutil.which(tool):
            return tool
    return None


def synthesize(model_name: str, model_path: str, metrics_path: str, project_dir: str, out_json: str,
               tcfg: Mapping) -> dict:
    """``hls_model.build()`` (C synthesis + export) when Vitis/Vivado HLS is on PATH; otherwise a
    status JSON and one log line saying what was skipped and why. ``tcfg`` is the config block ``trigger``."""
    tool = vendor_tool()
    if tool is None:
        status = {"model": model_name, "status": "skipped",
                  "reason": f"no Vivado/Vitis HLS on PATH (looked for {', '.join(HLS_TOOLS)})",
                  "project_dir": str(project_dir)}
        log.info("synthesize: skipped, no Vivado/Vitis HLS on PATH (looked for %s); the project %s is ready for "
                 "the vendor tool", ", ".join(HLS_TOOLS), project_dir)
        io.write_json(out_json, status)
        return status
    import json

    hcfg = tcfg["hls"]
    chosen = int(json.loads(Path(metrics_path).read_text())["chosen_width"])
    net, _ = load_model(model_path)
    types = layer_types(chosen, hcfg, layer_sizes(net))
    _, _, qnet = quantize_network(net, types)
    build_dir = Path(project_dir).with_name("hls4ml_build")
    shutil.rmtree(build_dir, ignore_errors=True)
    hls_model = convert(qnet, types, hcfg, len(tin.feature_names(tcfg)), str(build_dir))
    t0 = time.perf_counter()
    report = hls_model.build(csim=False, synth=True, export=bool(tcfg["synthesis"]["export"]))
    status = {"model": model_name, "status": "built", "tool": tool, "seconds": time.perf_counter() - t0,
              "build_dir": str(build_dir), "report": report}
    io.write_json(out_json, status)
    return status
