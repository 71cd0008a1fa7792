"""Consistency checks of the ``calo`` config block beyond its JSON schema (run when the DAG is built)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.errors import ConfigError


def check_calo_config(calo: Mapping, source: str = "config", workdir: str | os.PathLike = ".") -> None:
    """Raise one :class:`ConfigError` listing every problem, naming the key."""
    msgs = []
    if calo["geometry"] not in calo["geometries"]:
        msgs.append(f"calo.geometry: '{calo['geometry']}' is not a key of calo.geometries "
                    f"({', '.join(calo['geometries'])})")
    if calo["energy_min_mev"] >= calo["energy_max_mev"]:
        msgs.append("calo.energy_min_mev: must be below calo.energy_max_mev")
    for gname, g in calo["geometries"].items():
        for i, layer in enumerate(g["layers"]):
            e = layer["r_edges_mm"]
            if e[0] != 0 or any(b <= a for a, b in zip(e, e[1:])):
                msgs.append(f"calo.geometries.{gname}.layers[{i}].r_edges_mm: must start at 0 and increase strictly")
    for name, s in calo["samples"].items():
        for key in ("file", "binning"):
            if key in s:
                path = s[key] if os.path.isabs(s[key]) else os.path.join(str(workdir), s[key])
                if not os.path.exists(path):
                    msgs.append(f"calo.samples.{name}.{key}: '{s[key]}' does not exist")
    sp = calo["simulation"]["spots"]
    if sp["min"] > sp["max"]:
        msgs.append("calo.simulation.spots.min: must not exceed calo.simulation.spots.max")
    if msgs:
        raise ConfigError(f"{source}: invalid calo configuration:\n  " + "\n  ".join(msgs))


# --------------------------------------------------------------------------------------------
# file bookkeeping of the DAG (workflow/rules/calo.smk)
# --------------------------------------------------------------------------------------------
def sample_files(calo: Mapping, sample: str) -> dict[str, str]:
    """Showers and binning of a calo sample: produced (built in) or as listed (CaloChallenge file)."""
    scfg = calo["samples"][sample]
    if "file" in scfg:
        return {"h5": scfg["file"], "xml": scfg["binning"]}
    return {"h5": f"results/calo/reference/{sample}.h5", "xml": f"results/calo/reference/{sample}.xml"}


def training_inputs(calo: Mapping) -> dict[str, object]:
    names = list(calo["samples"])
    return {"h5": [sample_files(calo, s)["h5"] for s in names], "xml": [sample_files(calo, s)["xml"] for s in names],
            "experiments": "results/mlflow/experiments.json"}


def validation_inputs(calo: Mapping) -> dict[str, object]:
    names = list(calo["samples"])
    return {"ref_h5": [sample_files(calo, s)["h5"] for s in names],
            "ref_xml": [sample_files(calo, s)["xml"] for s in names],
            "gen_h5": [f"results/calo/generated/{s}.h5" for s in names],
            "gen_xml": [f"results/calo/generated/{s}.xml" for s in names],
            "experiments": "results/mlflow/experiments.json"}
