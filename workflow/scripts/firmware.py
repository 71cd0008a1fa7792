from pathlib import Path

from pipeline.glue import run, tracked
from pipeline.trigger.firmware import build_firmware


def main(smk):
    cfg, name = smk.config, smk.wildcards.model
    params = {"model": name, "hls": cfg["trigger"]["hls"], "rtl": cfg["trigger"]["rtl"]}
    with tracked(smk, "trigger", params=params) as tr:
        build_firmware(name, smk.input.model, smk.input.inputs, str(Path(smk.output.metrics).parent),
                       cfg["trigger"], cfg["plots"], tracked=tr)


run(snakemake, main)  # noqa: F821
