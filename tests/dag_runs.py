"""Running the DAG from tests, and comparing two runs' results file by file.

``run_snakemake`` runs the workflow of this repository in another working directory (as
``snakemake --directory``), ``compare_results`` walks two ``results/`` trees and returns every
difference, judged by file type, so that rules added later are covered without touching the
tests:

============  ==============================================================================
``.root``     every TTree: same branches, same types, same values (awkward arrays, NaN == NaN);
              other objects by class name. uproot stamps the write time into the file header
              and keys, so the bytes differ between runs while the content cannot.
``.parquet``  pyarrow tables equal, schema and metadata included
``.h5/.hdf5`` same groups and datasets (dtype, shape, values) and attributes; HDF5 object headers
              carry modification times, so bytes are not compared
``.json``     equal after removing :data:`VOLATILE_JSON_KEYS` and durations (keys matching
              :data:`VOLATILE_JSON_KEY_PATTERN`), at any depth
``.pt``, ``.ckpt``  ``torch.load`` of both, compared recursively (tensors by dtype, shape and
              values); Lightning checkpoints record their own absolute path, so in every decoded
              string the run's working directory is replaced by a placeholder
``.pkl``, ``.coffea``, ``.pickle``
              unpickled and compared recursively (``hist`` objects by axes, values, variances)
anything else (``.png``, ``.csv``, ``.xml``...)  the bytes: matplotlib writes PNGs without dates
============  ==============================================================================

Not compared (:data:`EXCLUDED_DIRS`): logs and benchmarks (timings), the MLflow store and its
artifacts (run ids, start times), Snakemake's own metadata.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import pickle
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# results/<dir> trees that hold run-specific data by design
EXCLUDED_DIRS = ("logs", "benchmarks", "mlflow", "mlflow-artifacts")
EXCLUDED_FILES = ("mlflow.db", "mlflow.db-journal", "report.html",
                  # hls4ml writes a random library stamp (uuid) into these two project files, the
                  # temporary directory the project was written in, and the PyTorch model pickled
                  # with memory-address storage ids; the firmware sources beside them are compared
                  "hls4ml_config.yml", "build_lib.sh")
# HTML renderings of metrics JSONs for the report (they show durations); the JSONs are compared
EXCLUDED_HTML_TABLES = "report/tables"
# JSON keys whose values are run-specific by nature: wall-clock durations (the project names them
# in seconds: `*_s`, `*_seconds`, `*_s_per_event`, e.g. train_seconds, train_time_main_s,
# generation_s_per_event) and MLflow run ids. Every other key must agree exactly.
VOLATILE_JSON_KEYS = frozenset({"run_id", "mlflow_run_id", "seconds"})
VOLATILE_JSON_KEY_PATTERN = re.compile(r".*(_s|_seconds|_s_per_event)$")
# Absolute paths of the working directory are replaced by this before comparing strings (Lightning
# checkpoints record their own path; each run has its own working directory).
WORKDIR_PLACEHOLDER = "<workdir>"


def run_snakemake(workdir: Path, *args: str, profile: str | None = "laptop", cores: int | None = 2,
                  check: bool = True, timeout: float | None = None, repo: Path = REPO,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the workflow of ``repo`` (default: this repository) in ``workdir``. Targets go before
    ``--configfile`` in ``args``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir)]
    if profile:
        cmd += ["--profile", str(repo / "profiles" / profile)]
    if cores:
        cmd += ["--cores", str(cores)]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}): {' '.join(cmd + list(args))}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def commit_available(commit: str) -> bool:
    """Whether this clone's history holds ``commit`` (a shallow clone may not)."""
    proc = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return proc.returncode == 0


def run_reference_commit(workdir: Path, commit: str, config: str = "config/tiny.yaml") -> Path:
    """Run the workflow *as it was at* ``commit`` (its Snakefile, rules, scripts, profiles, config
    and library: ``git archive`` into ``workdir/src``, imported first through ``PYTHONPATH``) in
    ``workdir/run``; returns ``workdir/run``. The installed dependencies are this checkout's."""
    import os
    import tarfile

    src, run_dir = workdir / "src", workdir / "run"
    src.mkdir(parents=True)
    run_dir.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True,
                             check=True).stdout
    import io as _io

    with tarfile.open(fileobj=_io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src / "src"), os.environ.get("PYTHONPATH", "")])}
    run_snakemake(run_dir, "--configfile", str(src / config), repo=src, env=env)
    return run_dir


def result_files(results: Path) -> dict[str, Path]:
    """Every compared file under ``results`` (relative path -> path)."""
    out = {}
    for path in sorted(results.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(results)
        if rel.parts[0] in EXCLUDED_DIRS or rel.name in EXCLUDED_FILES or str(rel.parent) == EXCLUDED_HTML_TABLES:
            continue
        out[rel.as_posix()] = path
    return out


def renamed(rel: str, renames: dict[str, str]) -> str:
    """``rel`` (a path under results/) with the longest matching old prefix of ``renames`` replaced."""
    for old in sorted(renames, key=len, reverse=True):
        if rel == old or rel.startswith(old.rstrip("/") + "/"):
            return renames[old] + rel[len(old):]
    return rel


def compare_results(a: Path, b: Path, renames: dict[str, str] | None = None,
                    only_in_a: Iterable[str] = ()) -> list[str]:
    """Every difference between the ``results/`` trees ``a`` and ``b`` (empty list: equal).

    ``renames`` maps old path prefixes (under results/) of ``b`` to the new ones of ``a``, for a ``b``
    made by older code: files are paired by their new names and, inside decoded files, the strings
    of ``b`` read ``results/<new>`` where they read ``results/<old>``. ``only_in_a``: files that ``a``
    makes and ``b`` does not, on purpose."""
    renames = renames or {}
    fa = result_files(a)
    fb = {renamed(k, renames): v for k, v in result_files(b).items()}
    expected_new = set(only_in_a)
    diffs = [f"only in {a}: {k}" for k in sorted(set(fa) - set(fb) - expected_new)]
    diffs += [f"only in {b}: {k}" for k in sorted(set(fb) - set(fa))]
    diffs += [f"expected only in {a} but missing there: {k}" for k in sorted(expected_new - set(fa))]
    token = _RENAMES.set(tuple((f"results/{o}", f"results/{n}") for o, n in sorted(renames.items(), key=lambda kv: -len(kv[0]))))
    try:
        for rel in sorted(set(fa) & set(fb)):
            try:
                problem = compare_file(fa[rel], fb[rel], workdirs=(a.parent, b.parent))
            except Exception as exc:  # a file one side cannot read is a difference, not a crash
                problem = f"cannot compare: {type(exc).__name__}: {exc}"
            if problem:
                diffs.append(f"{rel}: {problem}")
    finally:
        _RENAMES.reset(token)
    return diffs


def compare_file(a: Path, b: Path, workdirs: tuple[Path, Path] | None = None) -> str | None:
    """``None`` if ``a`` and ``b`` hold the same content (by file type), else what differs.

    ``workdirs``: the two runs' working directories, replaced by a placeholder in decoded strings
    (default: the parents of the ``results`` folder each file is in)."""
    if a.read_bytes() == b.read_bytes():
        return None
    if workdirs is None:
        workdirs = tuple(_workdir_of(p) for p in (a, b))
    token = _WORKDIRS.set(tuple(str(w.resolve()) for w in workdirs))
    try:
        return _compare_decoded(a, b)
    finally:
        _WORKDIRS.reset(token)


def _workdir_of(path: Path) -> Path:
    for parent in path.resolve().parents:
        if parent.name == "results":
            return parent.parent
    return path.parent


_WORKDIRS: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("workdirs", default=("", ""))
# (old, new) string replacements applied to the second tree's decoded strings (compare_results' renames)
_RENAMES: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("renames", default=())


def _compare_decoded(a: Path, b: Path) -> str | None:
    suffix = a.suffix.lower()
    if suffix == ".root":
        return _compare_root(a, b)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        ta, tb = pq.read_table(a), pq.read_table(b)
        return None if ta.equals(tb, check_metadata=True) else _table_diff(ta, tb)
    if suffix in (".h5", ".hdf5"):
        return _compare_h5(a, b)
    if suffix == ".json":
        ja, jb = (_strip_volatile(json.loads(p.read_text())) for p in (a, b))
        return _compare_obj(ja, jb, "")
    if suffix in (".pt", ".ckpt"):
        import torch

        oa, ob = (_load_torch(p) for p in (a, b))
        return _compare_obj(oa, ob, "")
    if suffix in (".pkl", ".pickle", ".coffea"):
        oa, ob = (_strip_volatile(_unpickle(p)) for p in (a, b))  # coffea outputs carry their wall time
        return _compare_obj(oa, ob, "")
    if _RENAMES.get():  # a text file that names renamed outputs (HTML tables, XML, CSV)
        try:
            ta, tb = a.read_text(), b.read_text()
        except UnicodeDecodeError:
            pass
        else:
            for old, new in _RENAMES.get():
                tb = tb.replace(old, new)
            if ta == tb:
                return None
    return f"bytes differ ({a.stat().st_size} vs {b.stat().st_size} bytes)"


def _load_torch(path: Path):
    """A torch.save file, or a TorchScript archive as {code, state_dict} (ScriptModules do not
    compare by value)."""
    import torch

    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    if is_zip:
        import zipfile

        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("/constants.pkl") for n in z.namelist())
        if scripted:
            module = torch.jit.load(str(path), map_location="cpu")
            return {"code": module.code, "state_dict": dict(module.state_dict())}
    return torch.load(path, map_location="cpu", weights_only=False)


def _unpickle(path: Path):
    if path.suffix == ".coffea":
        from coffea.util import load

        return load(path)
    with open(path, "rb") as f:
        return pickle.load(f)


def _table_diff(ta, tb) -> str:
    if ta.schema != tb.schema:
        return f"schemas differ: {ta.schema} vs {tb.schema}"
    if ta.schema.metadata != tb.schema.metadata:
        return "schema metadata differs"
    for name in ta.column_names:
        if not ta[name].equals(tb[name]):
            return f"column {name!r} differs"
    return f"tables differ ({ta.num_rows} vs {tb.num_rows} rows)"


def _compare_root(a: Path, b: Path) -> str | None:
    import awkward as ak
    import uproot

    with uproot.open(a) as fa, uproot.open(b) as fb:
        ka, kb = sorted(fa.keys(cycle=False)), sorted(fb.keys(cycle=False))
        if ka != kb:
            return f"keys differ: {ka} vs {kb}"
        for key in ka:
            oa, ob = fa[key], fb[key]
            if oa.classname != ob.classname:
                return f"{key}: class {oa.classname} vs {ob.classname}"
            if not isinstance(oa, uproot.TTree):
                continue
            if oa.keys() != ob.keys():
                return f"{key}: branches differ"
            if oa.num_entries != ob.num_entries:
                return f"{key}: {oa.num_entries} vs {ob.num_entries} entries"
            for name in oa.keys():
                if oa[name].typename != ob[name].typename:
                    return f"{key}/{name}: type {oa[name].typename} vs {ob[name].typename}"
            xa, xb = oa.arrays(library="ak"), ob.arrays(library="ak")
            for name in xa.fields:
                if not ak.array_equal(xa[name], xb[name], equal_nan=True):
                    return f"{key}/{name}: values differ"
    return None


def _compare_h5(a: Path, b: Path) -> str | None:
    import h5py

    def walk(f):
        items = {}
        f.visititems(lambda name, obj: items.__setitem__(name, obj))
        return items

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = walk(fa), walk(fb)
        if sorted(ia) != sorted(ib):
            return f"objects differ: {sorted(ia)} vs {sorted(ib)}"
        for name in ["/", *sorted(ia)]:
            oa, ob = (fa, fb) if name == "/" else (ia[name], ib[name])
            problem = _compare_obj(dict(oa.attrs), dict(ob.attrs), f"{name}.attrs")
            if problem:
                return problem
            if isinstance(oa, h5py.Dataset):
                if oa.dtype != ob.dtype or oa.shape != ob.shape:
                    return f"{name}: {oa.dtype}{oa.shape} vs {ob.dtype}{ob.shape}"
                if not _array_equal(oa[()], ob[()]):
                    return f"{name}: values differ"
    return None


def _array_equal(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(np.array_equal(x, y))


def _strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: _strip_volatile(v) for k, v in obj.items()
                if k not in VOLATILE_JSON_KEYS and not VOLATILE_JSON_KEY_PATTERN.fullmatch(str(k))}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def _compare_obj(x, y, where: str) -> str | None:
    """Recursive exact comparison of decoded content: dicts, sequences, arrays, tensors, hists."""
    here = where or "<top>"
    if type(x) is not type(y):
        return f"{here}: {type(x).__name__} vs {type(y).__name__}"
    if isinstance(x, dict):
        if sorted(map(str, x)) != sorted(map(str, y)):
            return f"{here}: keys {sorted(map(str, x))} vs {sorted(map(str, y))}"
        for k in x:
            if k not in y:  # same names, different key types
                return f"{here}: key {k!r} missing on one side"
            problem = _compare_obj(x[k], y[k], f"{where}.{k}" if where else str(k))
            if problem:
                return problem
        return None
    if isinstance(x, (list, tuple)):
        if len(x) != len(y):
            return f"{here}: length {len(x)} vs {len(y)}"
        for i, (u, v) in enumerate(zip(x, y)):
            problem = _compare_obj(u, v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(x, float):
        return None if (x == y or (math.isnan(x) and math.isnan(y))) else f"{here}: {x!r} vs {y!r}"
    if isinstance(x, str):
        wa, wb = _WORKDIRS.get()
        nx = x.replace(wa, WORKDIR_PLACEHOLDER) if wa else x
        ny = y.replace(wb, WORKDIR_PLACEHOLDER) if wb else y
        for old, new in _RENAMES.get():
            ny = ny.replace(old, new)
        return None if nx == ny else f"{here}: {x!r} vs {y!r}"
    if isinstance(x, (int, bool, bytes, type(None))):
        return None if x == y else f"{here}: {x!r} vs {y!r}"
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return None if _array_equal(x, y) else f"{here}: arrays differ"
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape:
                return f"{here}: tensor {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"
            return None if torch.equal(x, y) or bool(torch.all((x == y) | (x.isnan() & y.isnan()))) \
                else f"{here}: tensor values differ"
    if hasattr(x, "axes") and hasattr(x, "values") and hasattr(x, "variances"):  # hist / boost-histogram
        if x.axes != y.axes:
            return f"{here}: histogram axes differ"
        if not _array_equal(x.values(flow=True), y.values(flow=True)):
            return f"{here}: histogram values differ"
        vx, vy = x.variances(flow=True), y.variances(flow=True)
        if (vx is None) != (vy is None) or (vx is not None and not _array_equal(vx, vy)):
            return f"{here}: histogram variances differ"
        return None
    if hasattr(x, "__dict__") and vars(x):
        return _compare_obj(vars(x), vars(y), where)
    return None if x == y else f"{here}: {type(x).__name__} objects differ"


def assert_same_results(a: Path, b: Path, what: str, renames: dict[str, str] | None = None,
                        only_in_a: Iterable[str] = ()) -> None:
    diffs = compare_results(a, b, renames=renames, only_in_a=only_in_a)
    assert not diffs, f"{what}: {len(diffs)} difference(s):\n" + "\n".join(diffs[:50])


def iter_rules_in_log(text: str, local: bool = False) -> Iterable[str]:
    """The rule name of each job start a Snakemake log reports: ``rule NAME:`` blocks (jobs sent to
    the executor, retries included), or with ``local`` the ``localrule NAME:`` ones."""
    prefix = "localrule " if local else "rule "
    for line in text.splitlines():
        if line.startswith(prefix) and line.rstrip().endswith(":"):
            yield line.split()[1].rstrip(":")
