"""pipeline.cluster: GPU requests of the SLURM profile mapped onto what a partition advertises."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml

from pipeline.cluster import gpu_request, map_gpu_request, parse_gres_gpus, parse_sinfo_gpus
from pipeline.errors import ConfigError


@pytest.mark.parametrize("field, gpus", [
    ("(null)", 0),
    ("", 0),
    ("gpu:1", 1),
    ("gpu:a100:4", 4),
    ("gpu:a100:4(S:0-1)", 4),
    ("gpu:tesla:2(S:0),mps:200", 2),
    ("shard:8,gpu:h100:8(S:0-3)", 8),
    ("gpu:a100:2,gpu:v100:1", 3),
    ("gpu", 1),
    ("mps:100", 0),
])
def test_parse_sinfo_gres_field(field, gpus):
    assert parse_gres_gpus(field) == gpus


def test_partition_with_mixed_nodes_takes_the_largest():
    assert parse_sinfo_gpus("gpu:a100:4(S:0-1)\n(null)\ngpu:v100:2\n") == 4
    assert parse_sinfo_gpus("(null)\n") == 0


def _sbatch_gpu_args(gpu: int) -> str:
    """What snakemake-executor-plugin-slurm adds to sbatch for a job with resource gpu=``gpu``."""
    from snakemake.iocontainers import ResourceList
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    return set_gres_string(SimpleNamespace(resources=ResourceList(fromdict={"gpu": gpu})))


def test_partition_with_gpus_gets_gpus_in_sbatch():
    n = map_gpu_request("gpu", 1, available=4)
    assert n == 1
    assert _sbatch_gpu_args(n).split() == ["--gpus=1"]
    assert _sbatch_gpu_args(map_gpu_request("gpu", 2, available=2)).split() == ["--gpus=2"]


def test_partition_without_gpus_strips_the_request(capsys):
    n = map_gpu_request("gpu", 1, available=0)
    assert n == 0
    assert _sbatch_gpu_args(n) == ""
    assert "advertises no GPU" in capsys.readouterr().err


def test_no_slurm_here_keeps_the_request_and_bad_requests_are_errors():
    assert map_gpu_request("gpu", 1, available=None) == 1  # dry-run on a laptop shows the request
    assert map_gpu_request("gpu", 0, available=4) == 0
    with pytest.raises(ConfigError, match="3 GPU.*'gpu'.*at most 2"):
        map_gpu_request("gpu", 3, available=2)
    with pytest.raises(ConfigError, match="negative"):
        map_gpu_request("gpu", -1, available=2)


def test_profile_expressions_evaluate_through_snakemake(repo):
    """Every GPU request in profiles/slurm is a gpu_request(...) on the rule's own partition, and
    Snakemake's resource evaluator turns it into the number pipeline.cluster gives on this machine."""
    from snakemake.resources import Resource

    profile = yaml.safe_load((repo / "profiles" / "slurm" / "config.yaml").read_text())
    gpu_rules = {r: res for r, res in profile["set-resources"].items() if "gpu" in res}
    assert {"train_flow", "train_calo_gan"} <= set(gpu_rules)
    for rule, res in gpu_rules.items():
        expr = str(res["gpu"])
        m = re.fullmatch(r"__import__\('pipeline\.cluster'\)\.cluster\.gpu_request\('([^']+)', (\d+)\)", expr)
        assert m, f"{rule}: gpu should be a pipeline.cluster.gpu_request expression, got {expr!r}"
        assert m.group(1) == res["slurm_partition"], f"{rule}: expression and slurm_partition disagree"
        value = Resource.cli_evaluator("gpu", expr, wildcards={}, input=[], attempt=1, async_run=None)
        assert value == gpu_request(m.group(1), int(m.group(2)))
        assert isinstance(value, int)
