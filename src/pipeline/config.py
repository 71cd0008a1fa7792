"""Loading and validating the configuration.

The config is checked in one place, :func:`validate_config`, once before the DAG is built
(``workflow/rules/common.smk``): against the JSON schema (``workflow/schemas/config.schema.yaml``,
with each capability's block plugged in from its own schema file), then for consistency between
keys, which a JSON schema cannot express (a sample's process exists, training samples exist,
external files exist, ``calo.geometry`` names a geometry, ``classifier.chosen_lambda`` is one of
``classifier.lambdas``, ...). Each problem is reported once, naming the key path and what was
expected::

    config/tiny.yaml: samples.dy_mumu.n_events: -5 is less than the minimum of 1

Library code trusts a validated config: it indexes the keys the schema requires and does not
check them again.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


# Top-level config blocks whose schema lives in its own file, workflow/schemas/<block>.schema.yaml.
SECTION_SCHEMAS = ("detector", "flashsim", "calo", "classifier", "trigger", "analysis")


def schema() -> dict:
    """The full JSON schema, with each block of :data:`SECTION_SCHEMAS` plugged in from its file
    (and required: the rules read it)."""
    main = load_yaml(SCHEMA_DIR / "config.schema.yaml")
    for section in SECTION_SCHEMAS:
        path = SCHEMA_DIR / f"{section}.schema.yaml"
        if path.exists():
            main["properties"][section] = {k: v for k, v in load_yaml(path).items() if k != "$schema"}
            if section not in main["required"]:
                main["required"].append(section)  # every rule file reads its block
    return main


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _schema_errors(cfg: Mapping) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    messages = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        # For oneOf failures, say which shapes are allowed instead of dumping the schema.
        if err.validator == "oneOf" and _key_path(err).startswith("samples."):
            messages.append(
                f"{_key_path(err)}: a sample needs either `process`, `n_events` and "
                "`events_per_chunk` (built-in) or `files` (external NanoAOD), not both"
            )
        elif err.validator == "additionalProperties":
            messages.append(f"{_key_path(err)}: {err.message} (see config/README.md for the keys)")
        else:
            messages.append(f"{_key_path(err)}: {err.message}")
    return messages


def _consistency_errors(cfg: Mapping, workdir: Path) -> list[str]:
    msgs = []
    processes = cfg["generation"]["processes"]
    for name, sample in cfg["samples"].items():
        if "process" in sample and sample["process"] not in processes:
            msgs.append(
                f"samples.{name}.process: '{sample['process']}' is not a key of "
                f"generation.processes ({', '.join(processes)})"
            )
        if "files" in sample:
            for pattern in sample["files"]:
                full = pattern if os.path.isabs(pattern) else str(workdir / pattern)
                import glob

                if not glob.glob(full):
                    msgs.append(f"samples.{name}.files: '{pattern}' matches no file")
    for name in cfg["training_tables"]["samples"]:
        if name not in cfg["samples"]:
            msgs.append(f"training_tables.samples: '{name}' is not a key of samples")
    for name in cfg["flashsim"]["validation"]["samples"]:
        if name not in cfg["samples"]:
            msgs.append(f"flashsim.validation.samples: '{name}' is not a key of samples")
        elif not is_builtin(cfg["samples"][name]):
            msgs.append(f"flashsim.validation.samples: '{name}' is external; validation needs the "
                        "full simulation's reco collections of a built-in sample")
    for name in cfg["trigger"]["samples"] or []:  # null: every signal and background sample
        if name not in cfg["samples"]:
            msgs.append(f"trigger.samples: '{name}' is not a key of samples")
    sk = cfg["skim"]
    if sk["mmumu_min_gev"] >= sk["mmumu_max_gev"]:
        msgs.append("skim.mmumu_min_gev: must be below skim.mmumu_max_gev")
    for key, edges in cfg["plots"]["samples"].items():
        if not key.endswith(("_bins", "_bins_gev")):
            continue
        if any(b <= a for a, b in zip(edges, edges[1:])):
            msgs.append(f"plots.samples.{key}: bin edges must increase strictly")
    if not any(s["role"] == "signal" for s in cfg["samples"].values()):
        msgs.append("samples: at least one sample needs role: signal")
    msgs += _calo_errors(cfg["calo"], workdir)
    msgs += _classifier_errors(cfg["classifier"])
    msgs += _trigger_errors(cfg["trigger"])
    return msgs


def _calo_errors(calo: Mapping, workdir: Path) -> list[str]:
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
    return msgs


def _number_text(x: float) -> str:
    # The text of pipeline.classifier.naming.lambda_tag (config sits below the classifier, so it
    # cannot import it): 0 -> "0", 0.5 -> "0.5", 20.0 -> "20".
    return str(int(x)) if x.is_integer() else repr(x)


def _classifier_errors(ccfg: Mapping) -> list[str]:
    lambdas = [float(v) for v in ccfg["lambdas"]]
    if float(ccfg["chosen_lambda"]) not in lambdas:
        return [f"classifier.chosen_lambda: {ccfg['chosen_lambda']} is not one of classifier.lambdas "
                f"({', '.join(map(_number_text, lambdas))})"]
    return []


def _trigger_errors(tcfg: Mapping) -> list[str]:
    hcfg = tcfg["hls"]
    if hcfg["chosen_width"] is not None and int(hcfg["chosen_width"]) not in [int(w) for w in hcfg["widths"]]:
        return [f"trigger.hls.chosen_width {int(hcfg['chosen_width'])} is not in trigger.hls.widths"]
    return []


def validate_config(cfg: Mapping, source: str = "config", workdir: str | os.PathLike = ".") -> dict:
    """Validate ``cfg``; raise one :class:`ConfigError` listing every problem. Returns a copy."""
    cfg = copy.deepcopy(dict(cfg))
    msgs = _schema_errors(cfg)
    if not msgs:
        msgs = _consistency_errors(cfg, Path(workdir))
    if msgs:
        listing = "\n  ".join(msgs)
        raise ConfigError(f"{source}: invalid configuration:\n  {listing}")
    return cfg


# Top-level keys whose value is replaced whole by an overriding config instead of merged key by
# key: a config names exactly the samples it runs.
REPLACED_KEYS = ("samples",)
# The same for nested keys, as paths (the calorimeter samples of `calo`).
REPLACED_PATHS = (("calo", "samples"),)


def merge_configs(base: Mapping, override: Mapping, _top: bool = True, _path: tuple = ()) -> dict:
    """``override`` on top of ``base``: mappings merge recursively, other values are replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if (_top and key in REPLACED_KEYS) or (*_path, key) in REPLACED_PATHS:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_configs(out[key], value, _top=False, _path=(*_path, key))
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_base(cfg: Mapping, source: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Apply ``base: <file>`` (relative to the file that says it): start from that config and
    override it with the rest of ``cfg``. Bases can chain; cycles are an error."""
    cfg = dict(cfg)
    if "base" not in cfg:
        return cfg
    base_ref = cfg.pop("base")
    if not isinstance(base_ref, str):
        raise ConfigError(f"{source}: base: expected a path to another config file")
    base_path = (Path(source).parent / base_ref).resolve()
    if base_path in _seen:
        raise ConfigError(f"{source}: base: '{base_ref}' forms a cycle")
    if not base_path.exists():
        raise ConfigError(f"{source}: base: '{base_ref}' does not exist (looked for {base_path})")
    base = resolve_base(load_yaml(base_path), base_path, (*_seen, base_path))
    return merge_configs(base, cfg)


def load_config(path: str | os.PathLike, workdir: str | os.PathLike = ".") -> dict:
    """Load a config file (resolving ``base:``) and validate it."""
    return validate_config(resolve_base(load_yaml(path), path), source=str(path), workdir=workdir)


def config_sha256(cfg: Mapping) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys): the provenance tag ``config_sha256``.

    Defined once, in :mod:`pipeline.provenance`; :mod:`pipeline.tracking` logs it on every MLflow run."""
    from pipeline.provenance import config_sha256 as _sha

    return _sha(cfg)


# ---------------------------------------------------------------------------------------------
# sample bookkeeping, shared by the Snakefile and the library
# ---------------------------------------------------------------------------------------------
def is_builtin(sample_cfg: Mapping) -> bool:
    return "process" in sample_cfg


def builtin_samples(cfg: Mapping) -> list[str]:
    return [n for n, s in cfg["samples"].items() if is_builtin(s)]


def external_samples(cfg: Mapping) -> list[str]:
    return [n for n, s in cfg["samples"].items() if not is_builtin(s)]


def n_chunks(sample_cfg: Mapping) -> int:
    return math.ceil(sample_cfg["n_events"] / sample_cfg["events_per_chunk"])


def chunk_events(sample_cfg: Mapping, chunk: int) -> int:
    """Number of events of chunk ``chunk`` (the last chunk takes the remainder)."""
    per = sample_cfg["events_per_chunk"]
    return min(per, sample_cfg["n_events"] - chunk * per)
