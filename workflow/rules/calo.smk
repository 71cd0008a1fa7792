# Calorimeter fast simulation: reference showers -> WGAN-GP -> generated showers -> validation.
# All files in the CaloChallenge HDF5 format, each with its binning XML beside it.
# (The calo block is checked with the rest of the config: pipeline.config.validate_config.)
# Sample paths and input functions: workflow/rules/common.smk (rule files hold only rules).


rule calo_reference:
    """Reference showers of one built-in sample (GFlash-like, spot by spot) + binning XML."""
    input:
        experiments="results/mlflow/experiments.json",
    output:
        h5="results/calo/reference/{calo_sample}.h5",
        xml="results/calo/reference/{calo_sample}.xml",
    wildcard_constraints:
        calo_sample=CALO_BUILTIN_RE,
    params:
        calo=CALO,
    log:
        "results/logs/calo_reference/{calo_sample}.log",
    benchmark:
        "results/benchmarks/rules/calo_reference/{calo_sample}.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/calo_reference.py"


rule train_calo_gan:
    """One energy- and particle-conditioned WGAN-GP on the training split of every calo sample."""
    input:
        unpack(calo_training_inputs),
    output:
        model="results/models/calo/model.pt",
        metrics="results/models/calo/training.json",
        checkpoints=directory("results/models/calo/checkpoints"),
    params:
        calo=CALO,
        samples=CALO_SAMPLES,
    log:
        "results/logs/train_calo_gan.log",
    benchmark:
        "results/benchmarks/rules/train_calo_gan.tsv"
    # small MLPs: one thread is as fast as two and leaves a core to the rest of the DAG
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
        gpu=0,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/train_calo_gan.py"


rule calo_generate:
    """GAN showers at the incident energies of one sample's held-out reference showers."""
    input:
        unpack(lambda w: calo_sample_files(w.calo_sample)),
        model="results/models/calo/model.pt",
    output:
        h5="results/calo/generated/{calo_sample}.h5",
        xml="results/calo/generated/{calo_sample}.xml",
    wildcard_constraints:
        calo_sample=CALO_SAMPLES_RE,
    params:
        calo=CALO,
    log:
        "results/logs/calo_generate/{calo_sample}.log",
    benchmark:
        "results/benchmarks/rules/calo_generate/{calo_sample}.tsv"
    threads: 1
    resources:
        runtime=20,
        mem_mb=3000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/calo_generate.py"


rule validate_calo:
    """CaloChallenge-style validation: histograms + separation power, classifier AUCs, plots."""
    input:
        unpack(calo_validation_inputs),
    output:
        metrics="results/validation/calo/metrics.json",
        plots=directory("results/validation/calo/plots"),
    params:
        calo=CALO,
        samples=CALO_SAMPLES,
    log:
        "results/logs/validate_calo.log",
    benchmark:
        "results/benchmarks/rules/validate_calo.tsv"
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/validate_calo.py"
