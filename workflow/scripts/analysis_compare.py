from pipeline.analysis.compare import compare
from pipeline.glue import run, tracked


def main(smk):
    samples = list(smk.params.samples)
    full = dict(zip(samples, smk.input.full, strict=True))
    flash = dict(zip(samples, smk.input.flash, strict=True))
    with tracked(smk, "analysis") as tr:
        out = compare(full, flash, smk.output.plots, smk.output.yields, smk.output.comparison,
                      pdf=bool(smk.config["plots"]["samples"].get("pdf", False)))
        metrics = {}
        for sample, regs in out["yields"].items():
            for region, v in regs.items():
                for st in ("full", "flash"):
                    y, e = v[st]
                    metrics[f"{sample}.{region}.{st}"] = y
                    metrics[f"{sample}.{region}.{st}_err"] = e
                if "difference_error_paired" in v:
                    metrics[f"{sample}.{region}.difference_error_paired"] = v["difference_error_paired"]
        for sample, vs in out["comparison"].items():
            for var, c in vs.items():
                metrics[f"{sample}.chi2_ndf.{var}"] = c["chi2_ndf"]
        metrics.update({f"yield_pulls_total.{k}": v for k, v in out["yield_pulls_total"].items() if v is not None})
        tr.log_metrics(metrics)
        tr.log_artifact(smk.output.yields)
        tr.log_artifact(smk.output.comparison)


run(snakemake, main)  # noqa: F821
