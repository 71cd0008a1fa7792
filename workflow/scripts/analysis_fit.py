from pipeline.analysis.fit import fit
from pipeline.glue import run, tracked


def main(smk):
    cfg = smk.config
    samples = list(smk.params.samples)
    roles = {s: cfg["samples"][s]["role"] for s in samples}
    with tracked(smk, "analysis", params={"fit": cfg["analysis"]["fit"]}) as tr:
        out = fit(dict(zip(samples, smk.input.full, strict=True)), dict(zip(samples, smk.input.flash, strict=True)),
                  roles, cfg["analysis"]["fit"], smk.output.fit, copies=int(cfg["flashsim"]["oversampling_k"]))
        metrics = {"significance_relative_difference": out["significance_relative_difference"]}
        unc = out.get("significance_relative_difference_uncertainty")
        if unc is not None:
            metrics["significance_relative_difference_uncertainty"] = unc
        for k in ("full", "flash", "flash_oversampled"):
            for m in ("expected_significance", "mu_uncertainty", "signal_yield", "background_yield"):
                if out[k][m] is not None:
                    metrics[f"{k}.{m}"] = out[k][m]
        for name, c in out["cross"].items():
            metrics[f"{name}.mu"] = c["mu"]
            if c["mu_uncertainty"] is not None:
                metrics[f"{name}.mu_uncertainty"] = c["mu_uncertainty"]
        tr.log_metrics(metrics)
        tr.log_artifact(smk.output.fit)


run(snakemake, main)  # noqa: F821
