rule skim:
    """Preselection and event-level columns of one sample -> parquet + cutflow."""
    input:
        lambda w: sample_files(w.sample),
    output:
        skim="results/skims/{sample}.parquet",
        cutflow="results/skims/{sample}.cutflow.json",
    params:
        sample_cfg=lambda w: config["samples"][w.sample],
        skim=config["skim"],
        luminosity_fb=config["luminosity_fb"],
    log:
        "results/logs/skim/{sample}.log",
    benchmark:
        "results/benchmarks/rules/skim/{sample}.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/skim.yaml"
    script:
        "../scripts/skim.py"


rule training_table:
    """Matched (gen conditioning, reco target) rows of jets or muons for the FlashSim flows, the
    reco objects without a gen partner (fakes), and per event its GenJet and fake multiplicities."""
    input:
        training_inputs,
    output:
        table="results/training/{object}.parquet",
        fakes="results/training/{object}_fakes.parquet",
        events="results/training/{object}_events.parquet",
    params:
        files={s: sample_files(s) for s in config["training_tables"]["samples"]},
        acceptance=lambda w: config["training_tables"][w.object],
        chunk_events=config["skim"]["chunk_events"],
    log:
        "results/logs/training_table/{object}.log",
    benchmark:
        "results/benchmarks/rules/training_table/{object}.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/skim.yaml"
    script:
        "../scripts/training_table.py"
