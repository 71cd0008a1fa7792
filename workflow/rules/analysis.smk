# The VBF H->mumu analysis in Coffea on full and flash samples (src/pipeline/analysis), their
# comparison, the pyhf closure test and the report.
ANALYSIS = config["analysis"]
SIMTYPES = ["full", "flash"]
CLASSIFIER_MODEL = "results/models/classifier/model.pt"
CLASSIFIER_JSON = "results/models/classifier/model.json"
ANALYSIS_OUT = "results/analysis/{simtype}/{sample}.coffea"
# Metrics JSONs rendered as tables in the report: name -> file (other stages add theirs here).
REPORT_METRICS = {
    "flashsim_validation": "results/validation/flashsim/metrics.json",
    "calo_validation": "results/validation/calo/metrics.json",
    "classifier": "results/validation/classifier/metrics.json",
    "yields": "results/analysis/yields.json",
    "fit": "results/analysis/fit.json",
    "comparison": "results/analysis/comparison.json",
    **{f"trigger_firmware_{m}": f"results/firmware/{m}/metrics.json" for m in config["trigger"]["models"]},
}


wildcard_constraints:
    simtype="full|flash",


rule analysis:
    """The Coffea processor over one sample, full or flash simulation -> hist outputs (coffea.util.save)."""
    input:
        files=lambda w: sample_files(w.sample) if w.simtype == "full" else flash_files(w.sample),
        experiments="results/mlflow/experiments.json",
        **({"model": CLASSIFIER_MODEL, "model_json": CLASSIFIER_JSON} if ANALYSIS["use_classifier"] else {}),
    output:
        ANALYSIS_OUT,
    log:
        "results/logs/analysis/{simtype}_{sample}.log",
    benchmark:
        "results/benchmarks/rules/analysis/{simtype}_{sample}.tsv"
    threads: ANALYSIS["workers"]
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/analysis.py"


rule analysis_compare:
    """Full vs flash: overlays with ratio panels and chi2/ndf, yields per region and sample."""
    input:
        full=expand(ANALYSIS_OUT, simtype="full", sample=SAMPLES),
        flash=expand(ANALYSIS_OUT, simtype="flash", sample=SAMPLES),
        experiments="results/mlflow/experiments.json",
    output:
        plots=report(
            directory("results/plots/analysis"),
            patterns=["{sample}/{variable}.png"],
            caption="../report/analysis_plots.rst",
            category="6 Analysis: full vs FlashSim",
            subcategory="{sample}",
            labels={"sample": "{sample}", "variable": "{variable}"},
        ),
        yields="results/analysis/yields.json",
        comparison="results/analysis/comparison.json",
    params:
        samples=SAMPLES,
    log:
        "results/logs/analysis_compare.log",
    benchmark:
        "results/benchmarks/rules/analysis_compare.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/analysis_compare.py"


rule analysis_fit:
    """pyhf closure: expected significance and mu uncertainty from full and from flash, cross fits."""
    input:
        full=expand(ANALYSIS_OUT, simtype="full", sample=SAMPLES),
        flash=expand(ANALYSIS_OUT, simtype="flash", sample=SAMPLES),
        experiments="results/mlflow/experiments.json",
    output:
        fit="results/analysis/fit.json",
    params:
        samples=SAMPLES,
    log:
        "results/logs/analysis_fit.log",
    benchmark:
        "results/benchmarks/rules/analysis_fit.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/analysis_fit.py"


rule report_tables:
    """The metrics JSONs of every stage as HTML tables for the report."""
    input:
        **REPORT_METRICS,
    output:
        report(
            directory("results/report/tables"),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="0 Metrics tables",
            labels={"table": "{name}"},
        ),
    log:
        "results/logs/report_tables.log",
    threads: 1
    resources:
        runtime=10,
        mem_mb=1000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/report_tables.py"


rule report_plots:
    """The plots that stages write beside their declared outputs, gathered per stage for the report."""
    input:
        samples=expand("results/plots/samples/{sample}/summary.json", sample=SAMPLES),
        flashsim="results/validation/flashsim/metrics.json",
        calo="results/validation/calo/metrics.json",
    output:
        samples=report(
            directory("results/report/plots/samples"),
            patterns=["{sample}/{name}.png"],
            caption="../report/sample_plots.rst",
            category="1 Samples",
            subcategory="{sample}",
            labels={"sample": "{sample}", "plot": "{name}"},
        ),
        flashsim=report(
            directory("results/report/plots/flashsim"),
            patterns=["validation/{name}.png"],
            caption="../report/flashsim_plots.rst",
            category="2 FlashSim validation",
            labels={"plot": "{name}"},
        ),
        calo=report(
            directory("results/report/plots/calo"),
            patterns=["{particle}/{name}.png"],
            caption="../report/calo_plots.rst",
            category="3 Calorimeter validation",
            subcategory="{particle}",
            labels={"sample": "{particle}", "plot": "{name}"},
        ),
    params:
        samples={s: f"results/plots/samples/{s}" for s in SAMPLES},
        flashsim={"validation": "results/validation/flashsim"},
        # the calorimeter validation draws plots only with calo.validation.plots
        calo=(
            {p: f"results/validation/calo/plots/{p}" for p in config["calo"]["samples"]}
            if config["calo"]["validation"]["plots"]
            else {}
        ),
    log:
        "results/logs/report_plots.log",
    threads: 1
    resources:
        runtime=10,
        mem_mb=1000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/report_plots.py"


CAPABILITY_TARGETS += [
    "results/analysis/yields.json",
    "results/analysis/fit.json",
    "results/report/tables",
    "results/report/plots/samples",
]
