# Trigger firmware (src/pipeline/trigger): train_trigger -> hls4ml C-simulation and RTL ->
# vendor synthesis where the tools exist.
TRIGGER = config["trigger"]
TRIGGER_MODELS = list(TRIGGER["models"])
# null: every sample with role signal or background (like the classifier)
TRIGGER_SAMPLES = TRIGGER["samples"] or [s for s, c in config["samples"].items() if c["role"] in ("signal", "background")]
TRIGGER_INPUTS = "results/trigger/inputs.parquet"
TRIGGER_MODEL = "results/models/trigger/{model}.pt"
FIRMWARE_DIR = "results/firmware/{model}"


wildcard_constraints:
    model="|".join(TRIGGER_MODELS) or "^$",


rule trigger_inputs:
    """L1-like features (leading muons and jets at trigger granularity, MET), weights, test split."""
    input:
        samples=[f for s in TRIGGER_SAMPLES for f in sample_files(s)],
        cutflows=[f"results/skims/{s}.cutflow.json" for s in TRIGGER_SAMPLES],
    output:
        TRIGGER_INPUTS,
    params:
        files={s: sample_files(s) for s in TRIGGER_SAMPLES},
    log:
        "results/logs/trigger_inputs.log",
    benchmark:
        "results/benchmarks/rules/trigger_inputs.tsv"
    threads: 1
    resources:
        runtime=20,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/trigger_inputs.py"


rule train_trigger:
    """The Lightning MLP of one model of trigger.models on the training split; MLflow run."""
    input:
        inputs=TRIGGER_INPUTS,
        experiments="results/mlflow/experiments.json",
    output:
        model=TRIGGER_MODEL,
        metrics="results/models/trigger/{model}.metrics.json",
    log:
        "results/logs/train_trigger/{model}.log",
    benchmark:
        "results/benchmarks/rules/train_trigger/{model}.tsv"
    threads: TRIGGER["threads"]
    resources:
        runtime=30,
        mem_mb=3000,
        gpu=0,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/train_trigger.py"


rule firmware:
    """hls4ml project + C-simulation precision scan, Verilog simulated against the C-simulation,
    Yosys resources and latency -> metrics.json; MLflow run."""
    input:
        model=TRIGGER_MODEL,
        inputs=TRIGGER_INPUTS,
        experiments="results/mlflow/experiments.json",
    output:
        metrics=f"{FIRMWARE_DIR}/metrics.json",
        scan=f"{FIRMWARE_DIR}/scan.json",
        plot=report(f"{FIRMWARE_DIR}/precision_scan.png", caption="../report/trigger_plots.rst", category="5 Trigger"),
        verilog=f"{FIRMWARE_DIR}/rtl/trigger_nn.v",
        project=directory(f"{FIRMWARE_DIR}/hls4ml_prj"),
    log:
        "results/logs/firmware/{model}.log",
    benchmark:
        "results/benchmarks/rules/firmware/{model}.tsv"
    threads: 1
    resources:
        runtime=60,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/firmware.py"


rule synthesize:
    """hls4ml build() with Vitis/Vivado HLS when on PATH; otherwise a 'skipped' status, exit 0."""
    input:
        model=TRIGGER_MODEL,
        metrics=f"{FIRMWARE_DIR}/metrics.json",
        project=f"{FIRMWARE_DIR}/hls4ml_prj",
    output:
        f"{FIRMWARE_DIR}/synthesis.json",
    log:
        "results/logs/synthesize/{model}.log",
    benchmark:
        "results/benchmarks/rules/synthesize/{model}.tsv"
    threads: 1
    resources:
        runtime=240,
        mem_mb=4000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/synthesize.py"


CAPABILITY_TARGETS += expand(f"{FIRMWARE_DIR}/{{name}}", model=TRIGGER_MODELS,
                             name=["metrics.json", "synthesis.json", "precision_scan.png"])
