# FlashSim: conditional normalizing flows that generate the reco Jet / Muon collections from
# generator level (src/pipeline/flashsim). train_flow -> flash_generate -> validate_flashsim.
FLASH_MODEL = "results/models/flashsim/{object}.pt"


rule train_flow:
    """Efficiency net + conditional NSF coupling flow + fake model of one object type -> one
    checkpoint file; per-epoch losses and the model in an MLflow run."""
    input:
        table="results/training/{object}.parquet",
        fakes="results/training/{object}_fakes.parquet",
        events="results/training/{object}_events.parquet",
        experiments="results/mlflow/experiments.json",
    output:
        model=FLASH_MODEL,
        metrics="results/models/flashsim/{object}.metrics.json",
    log:
        "results/logs/train_flow/{object}.log",
    benchmark:
        "results/benchmarks/rules/train_flow/{object}.tsv"
    threads: config["flashsim"]["threads"]
    resources:
        runtime=60,
        mem_mb=4000,
        gpu=0,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/train_flow.py"


rule flash_generate:
    """Flash reco collections (x k oversampling) for one file of a sample, built-in or external."""
    input:
        gen=lambda w: sample_files(w.sample)[int(w.chunk)],
        models=expand(FLASH_MODEL, object=OBJECTS),
    output:
        "results/flashsim/{sample}/chunk{chunk}.root",
    log:
        "results/logs/flash_generate/{sample}_chunk{chunk}.log",
    benchmark:
        "results/benchmarks/rules/flash_generate/{sample}_chunk{chunk}.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/flash_generate.py"


rule validate_flashsim:
    """Flash vs full simulation on the held-out events: metrics.json, plots, MLflow run."""
    input:
        full=[f for s in config["flashsim"]["validation"]["samples"] for f in sample_files(s)],
        flash=[f for s in config["flashsim"]["validation"]["samples"] for f in flash_files(s)],
        models=expand(FLASH_MODEL, object=OBJECTS),
        experiments="results/mlflow/experiments.json",
    output:
        metrics="results/validation/flashsim/metrics.json",
    params:
        full={s: sample_files(s) for s in config["flashsim"]["validation"]["samples"]},
        flash={s: flash_files(s) for s in config["flashsim"]["validation"]["samples"]},
    log:
        "results/logs/validate_flashsim.log",
    benchmark:
        "results/benchmarks/rules/validate_flashsim.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/validate_flashsim.py"
