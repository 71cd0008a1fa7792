"""SLURM: map the workflow's GPU requests onto what a partition really has.

The training rules ask for GPUs in ``profiles/slurm/config.yaml``::

    set-resources:
      train_flow:
        slurm_partition: "gpu"
        gpu: "__import__('pipeline.cluster').cluster.gpu_request('gpu', 1)"

Snakemake evaluates that expression when it builds each job; the SLURM executor plugin turns a
non-zero ``gpu`` resource into ``sbatch --gpus=N`` (``gres: gpu:N`` would give ``--gres=gpu:N``).
:func:`gpu_request` asks ``sinfo`` which generic resources (GRES) the partition's nodes advertise:

- the partition advertises GPUs: the request is kept (more than a node has is a clear error,
  not a job pending forever);
- it advertises none (``(null)``, e.g. the one-node cluster of ``tools/local-slurm.sh``): the
  request is stripped to 0, with a warning, and the job runs on the node's CPUs (training uses
  the GPU only when torch sees one);
- there is no SLURM here (no ``sinfo``, e.g. ``snakemake --profile profiles/slurm -n`` on a
  laptop): the request is kept as written, so the dry-run shows what a cluster would get.

The answer of ``sinfo`` is cached per partition for the life of the process (one call per
partition, not one per job).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys

from pipeline.errors import ConfigError

# one GRES entry of `sinfo -o %G`: name[:type]:count[(S:sockets)], e.g. gpu:a100:4(S:0-1)
_GRES_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_]+)(?::(?P<type>[A-Za-z0-9_.\-]+))?(?::(?P<count>\d+))?(?:\(.*\))?$")


def parse_gres_gpus(gres_field: str) -> int:
    """GPUs per node in one ``sinfo -o %G`` field: ``"gpu:a100:4(S:0-1),shard:8"`` -> 4, ``"(null)"`` -> 0.

    A ``gpu`` entry without a count (``gpu``, ``gpu:a100``) counts as one GPU; several ``gpu``
    entries of different types add up.
    """
    total = 0
    field = gres_field.strip()
    if not field or field == "(null)":
        return 0
    # split on commas that are not inside a socket list "(S:0-1)"
    for entry in re.split(r",(?![^(]*\))", field):
        m = _GRES_ENTRY.match(entry.strip())
        if m is None or m.group("name") != "gpu":
            continue
        count = m.group("count")
        if count is None and m.group("type") and m.group("type").isdigit():
            count = m.group("type")  # "gpu:2" matches type=2 when there is no third part
        total += int(count) if count is not None else 1
    return total


def parse_sinfo_gpus(sinfo_output: str) -> int:
    """The most GPUs any node of the partition has, from ``sinfo -h -o %G`` (one line per node group)."""
    return max((parse_gres_gpus(line) for line in sinfo_output.splitlines() if line.strip()), default=0)


@functools.lru_cache(maxsize=None)
def partition_gpus(partition: str) -> int | None:
    """GPUs per node that ``partition`` advertises, or ``None`` where SLURM cannot be asked."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    try:
        proc = subprocess.run([sinfo, "-h", "-p", partition, "-o", "%G"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    if not proc.stdout.strip():
        raise ConfigError(f"profiles/slurm: partition {partition!r} does not exist on this cluster "
                          f"(sinfo -p {partition} lists no node); set slurm_partition to one of `sinfo -s`")
    return parse_sinfo_gpus(proc.stdout)


def map_gpu_request(partition: str, gpus: int, available: int | None) -> int:
    """The GPU count to submit for ``gpus`` requested on ``partition`` whose nodes have ``available``."""
    gpus = int(gpus)
    if gpus < 0:
        raise ConfigError(f"profiles/slurm: gpu request {gpus} for partition {partition!r} is negative")
    if gpus == 0 or available is None:
        return gpus
    if available == 0:
        print(f"pipeline.cluster: partition {partition!r} advertises no GPU (sinfo %G); "
              f"the request for {gpus} GPU(s) is dropped and the job runs on CPUs", file=sys.stderr)
        return 0
    if gpus > available:
        raise ConfigError(f"profiles/slurm: {gpus} GPU(s) requested on partition {partition!r}, "
                          f"whose nodes have at most {available}")
    return gpus


def gpu_request(partition: str, gpus: int = 1) -> int:
    """What ``set-resources`` should request: ``gpus`` if ``partition`` has GPUs, else 0 (see module doc)."""
    return map_gpu_request(partition, gpus, partition_gpus(partition))
