from pipeline.glue import run
from pipeline.trigger.inputs import build_inputs


def main(smk):
    cfg = smk.config
    files = smk.params.files
    cutflows = {s: next(c for c in smk.input.cutflows if c.endswith(f"/{s}.cutflow.json")) for s in files}
    build_inputs(files, cutflows, cfg["samples"], cfg["trigger"], smk.output[0], progress=True)


run(snakemake, main)  # noqa: F821
