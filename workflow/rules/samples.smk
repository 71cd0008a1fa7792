rule generate_sample:
    """Pythia8 -> gen jets -> reference detector simulation -> NanoAOD, one chunk of a built-in sample."""
    input:
        experiments="results/mlflow/experiments.json",
    output:
        "results/samples/{sample}/chunk{chunk}.root",
    log:
        "results/logs/generate_sample/{sample}_chunk{chunk}.log",
    benchmark:
        "results/benchmarks/rules/generate_sample/{sample}_chunk{chunk}.tsv"
    threads: 1
    resources:
        runtime=120,
        mem_mb=3000,
    conda:
        "../../envs/samples.yaml"
    script:
        "../scripts/generate_sample.py"


rule sample_plots:
    """Response, resolution, efficiency and multiplicity plots of one sample (full simulation)."""
    input:
        lambda w: sample_files(w.sample),
    output:
        summary="results/plots/samples/{sample}/summary.json",
    params:
        plots=config["plots"]["samples"],
    log:
        "results/logs/sample_plots/{sample}.log",
    benchmark:
        "results/benchmarks/rules/sample_plots/{sample}.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../../envs/samples.yaml"
    script:
        "../scripts/sample_plots.py"
