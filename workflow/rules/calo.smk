# Calorimeter fast simulation: reference showers -> WGAN-GP -> generated showers -> validation.
# All files in the CaloChallenge HDF5 format, each with its binning XML beside it.
# (The calo block is checked with the rest of the config: pipeline.config.validate_config.)
CALO = config["calo"]
CALO_SAMPLES = list(CALO["samples"])
CALO_BUILTIN = [s for s in CALO_SAMPLES if "file" not in CALO["samples"][s]]
CALO_BUILTIN_RE = "|".join(CALO_BUILTIN) or "^$"
CALO_SAMPLES_RE = "|".join(CALO_SAMPLES)


def calo_sample_files(sample):
    """Showers and binning of a calo sample: produced (built in) or as listed (CaloChallenge file)."""
    scfg = CALO["samples"][sample]
    if "file" in scfg:
        return {"h5": scfg["file"], "xml": scfg["binning"]}
    return {"h5": f"results/calo/reference/{sample}.h5", "xml": f"results/calo/reference/{sample}.xml"}


def calo_training_inputs(wildcards):
    return {"h5": [calo_sample_files(s)["h5"] for s in CALO_SAMPLES],
            "xml": [calo_sample_files(s)["xml"] for s in CALO_SAMPLES],
            "experiments": "results/mlflow/experiments.json"}


def calo_validation_inputs(wildcards):
    return {"ref_h5": [calo_sample_files(s)["h5"] for s in CALO_SAMPLES],
            "ref_xml": [calo_sample_files(s)["xml"] for s in CALO_SAMPLES],
            "gen_h5": [f"results/calo/generated/{s}.h5" for s in CALO_SAMPLES],
            "gen_xml": [f"results/calo/generated/{s}.xml" for s in CALO_SAMPLES],
            "experiments": "results/mlflow/experiments.json"}


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
