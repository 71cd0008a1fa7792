from pathlib import Path

from pipeline.runner import provenance, run
from pipeline.tracking import tracked_run
from pipeline.trigger.firmware import build_firmware


def main(smk):
    cfg, name = smk.config, smk.wildcards.model
    params = {"model": name, "hls": cfg["trigger"]["hls"], "rtl": cfg["trigger"]["rtl"]}
    with tracked_run(cfg["mlflow"], "trigger", f"firmware {name}", **provenance(smk, params=params)) as tracked:
        build_firmware(name, smk.input.model, smk.input.inputs, str(Path(smk.output.metrics).parent), cfg,
                       tracked=tracked)


run(snakemake, main)
