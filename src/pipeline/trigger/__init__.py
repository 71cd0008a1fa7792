"""Level-1 trigger firmware: a small network on trigger-granularity objects, its hls4ml project
and bit-accurate C-simulation, and an open-source RTL implementation of the same fixed-point
network (Verilog, Icarus/Verilator simulation, Yosys synthesis).

:mod:`pipeline.trigger.inputs`
    L1-like features from NanoAOD: the leading muons and jets (pT, eta, phi as hardware counts at
    trigger granularity) and MET; cross-section weights; the train/test split.
:mod:`pipeline.trigger.model`
    The Lightning MLP (``train_trigger``), its checkpoint, float scores, ROC figures of merit.
:mod:`pipeline.trigger.fixed`
    The fixed-point types of the firmware (one place, shared by hls4ml and the RTL) and the exact
    integer model of an ``ap_fixed`` cast.
:mod:`pipeline.trigger.firmware`
    hls4ml conversion, ``compile()`` / C-simulation, the precision scan, resource and latency
    estimates, plots, ``metrics.json``; vendor synthesis where Vitis/Vivado HLS exists.
:mod:`pipeline.trigger.rtl`
    Verilog generator, simulation, Yosys ``synth_xilinx`` and the parsing of its reports.
"""
