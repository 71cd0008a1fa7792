# Config validation and the helpers every rule file uses. Logic lives in src/pipeline.
import pipeline.config as pcfg
from pipeline.io import expand_files

_CONFIG_SOURCE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "config/config.yaml"
config = pcfg.validate_config(pcfg.resolve_base(config, _CONFIG_SOURCE), source=_CONFIG_SOURCE)
SAMPLES = list(config["samples"])
BUILTIN = pcfg.builtin_samples(config)
EXTERNAL = pcfg.external_samples(config)
# One MLflow experiment per capability, created once before jobs fan out (SQLite locking).
EXPERIMENTS = ["samples", "flashsim", "calo", "classifier", "trigger", "analysis"]
OBJECTS = ["jets", "muons"]


wildcard_constraints:
    sample=r"[A-Za-z][A-Za-z0-9_]*",
    chunk=r"\d+",
    object="jets|muons",


def sample_files(sample):
    """The NanoAOD files of a sample: produced chunks (built-in) or the listed files (external)."""
    scfg = config["samples"][sample]
    if pcfg.is_builtin(scfg):
        return [f"results/samples/{sample}/chunk{c}.root" for c in range(pcfg.n_chunks(scfg))]
    return expand_files(scfg["files"], what=f"samples.{sample}.files")


def flash_files(sample):
    """The FlashSim NanoAOD files of a sample: one per file of the sample (workflow/rules/flashsim.smk)."""
    return [f"results/flashsim/{sample}/chunk{c}.root" for c in range(len(sample_files(sample)))]


def training_inputs(wildcards):
    return [f for s in config["training_tables"]["samples"] for f in sample_files(s)]


# Each capability's rule file appends its final outputs here (`CAPABILITY_TARGETS += [...]`);
# `all` builds them.
CAPABILITY_TARGETS = []


def all_outputs():
    out = list(CAPABILITY_TARGETS)
    for s in SAMPLES:
        out += sample_files(s) if s in BUILTIN else []
        out += [
            f"results/skims/{s}.parquet",
            f"results/skims/{s}.cutflow.json",
            f"results/plots/samples/{s}/summary.json",
        ]
    out += [f"results/training/{o}{kind}.parquet" for o in OBJECTS for kind in ("", "_fakes")]
    # flashsim (workflow/rules/flashsim.smk): models, flash samples, validation
    out += [f"results/models/flashsim/{o}.pt" for o in OBJECTS]
    out += [f for s in SAMPLES for f in flash_files(s)]
    out += ["results/validation/flashsim/metrics.json"]
    out += ["results/models/calo/model.pt", "results/validation/calo/metrics.json"]  # calo (workflow/rules/calo.smk)
    return out


# Calorimeter samples (workflow/rules/calo.smk)
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
