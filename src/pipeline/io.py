"""Reading and writing: ROOT (NanoAOD), parquet and JSON, with clear errors and atomic outputs.

Two rules hold for every file the pipeline produces:

1. It is written under a temporary name in the same directory and renamed into place only when
   complete (:func:`atomic_output`), so a crash or ``kill -9`` never leaves a partial output that a
   later step (or Snakemake) would mistake for a finished one.
2. Every input is checked before use (:func:`open_tree`, :func:`check_branches`): a missing file,
   a file that is not ROOT, a truncated file, a file without the tree and a tree without a needed
   branch each raise one :class:`~pipeline.errors.InputFileError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import awkward as ak
import numpy as np

from pipeline.errors import InputFileError, MissingBranchError

# uproot writes one TBasket per branch per extend(); below ~100 kB per branch files get slow to read.
DEFAULT_WRITE_CHUNK = 20_000


# --------------------------------------------------------------------------------------------
# atomic outputs
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    On any exception the temporary file is removed and nothing appears at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically. NaN is not valid JSON and is rejected."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n")


def _json_default(o: object):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(path: str | os.PathLike, table) -> None:
    """Write a pandas DataFrame or pyarrow Table to parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | os.PathLike, columns: Iterable[str] | None = None, what: str = ""):
    """Read a parquet file into pandas, with one clear error for a missing file or column."""
    import pyarrow.parquet as pq

    from pipeline.errors import MissingColumnError

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: file does not exist")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a parquet file"
        raise InputFileError(f"{path}: not a readable parquet file ({exc})") from None
    if columns is not None:
        columns = list(columns)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            need = f" needed by {what}" if what else ""
            raise MissingColumnError(f"{path}: no column {', '.join(map(repr, missing))}{need}")
    return pq.read_table(path, columns=columns).to_pandas()


# --------------------------------------------------------------------------------------------
# locating input files
# --------------------------------------------------------------------------------------------
def expand_files(patterns: Iterable[str], base_dir: str | os.PathLike = ".", what: str = "") -> list[str]:
    """Expand paths and globs, sorted; a pattern matching nothing raises a clear error."""
    out: list[str] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.join(base_dir, pattern)
        hits = sorted(glob.glob(full))
        if not hits:
            where = f" (listed in {what})" if what else ""
            raise InputFileError(f"{pattern}: no such file{where}")
        out += hits
    return out


# --------------------------------------------------------------------------------------------
# ROOT input
# --------------------------------------------------------------------------------------------
def check_input_file(path: str | os.PathLike, magic: bytes, kind: str, signature: str,
                     expected: str | None = None) -> Path:
    """Check that ``path`` exists, is a file and starts with ``magic``; one clear error if not.

    ``kind`` is what the magic bytes identify ("a ROOT file"), ``signature`` names those bytes,
    ``expected`` what the stage wanted (default ``kind``)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: file does not exist")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected {expected or kind}")
    with open(path, "rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        raise InputFileError(f"{path}: not {kind} (expected {signature} at the start)")
    return path


def open_tree(path: str | os.PathLike, tree: str = "Events"):
    """Open ``tree`` in a ROOT file, turning every way this can fail into one clear error."""
    import uproot

    path = check_input_file(path, b"root", "a ROOT file", "the 'root' magic bytes")
    try:
        file = uproot.open(path)
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: cannot be opened as ROOT, truncated or corrupt? ({exc})") from None
    try:
        end = file.file.fEND
    except Exception:  # noqa: BLE001
        end = None
    if end is not None and path.stat().st_size < end:
        raise InputFileError(
            f"{path}: truncated ROOT file ({path.stat().st_size} bytes, the header says {end})"
        )
    try:
        keys = file.keys(cycle=False)
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: ROOT directory unreadable, truncated or corrupt? ({exc})") from None
    if tree not in keys:
        raise InputFileError(f"{path}: no tree '{tree}' (found: {', '.join(keys) or 'nothing'})")
    try:
        obj = file[tree]
        obj.num_entries  # noqa: B018 - touches the TTree header
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: tree '{tree}' unreadable, truncated or corrupt? ({exc})") from None
    return obj


def check_branches(tree, needed: Iterable[str], path: str | os.PathLike, stage: str = "") -> None:
    """Raise :class:`MissingBranchError` naming every branch of ``needed`` that ``tree`` lacks."""
    keys = set(tree.keys())
    missing = [b for b in needed if b not in keys]
    if missing:
        raise MissingBranchError(str(path), tree.name, missing, stage)


def check_inputs(files: Iterable[str | os.PathLike], branches: Iterable[str], stage: str = "") -> dict[str, int]:
    """Open every file and check its branches before any is read (:class:`InputFileError` /
    :class:`MissingBranchError` naming the file); return the number of entries per file."""
    branches = list(branches)
    entries = {}
    for path in files:
        tree = open_tree(path)
        check_branches(tree, branches, path, stage)
        entries[path] = int(tree.num_entries)
        try:
            tree.file.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    return entries


def remove_outputs(paths: Iterable[str | os.PathLike]) -> None:
    """Remove the outputs of a failed step (missing ones are fine): no partial or stale output."""
    for p in paths:
        try:
            Path(p).unlink()
        except FileNotFoundError:
            pass


def iterate_events(
    files: Iterable[str | os.PathLike],
    branches: Iterable[str],
    step_size: int = 100_000,
    stage: str = "",
    tree: str = "Events",
) -> Iterator[tuple[str, dict[str, ak.Array]]]:
    """Yield ``(file, {branch: array})`` chunks of at most ``step_size`` events from each file.

    Every file is checked (existence, ROOT, tree, branches) before its first chunk is read, and a
    read error in the middle of a file (a truncated basket) is reported with the file's name.
    """
    branches = list(dict.fromkeys(branches))
    for path in files:
        t = open_tree(path, tree)
        check_branches(t, branches, path, stage)
        try:
            for chunk in t.iterate(branches, step_size=step_size, library="ak", how=dict):
                yield str(path), chunk
        except InputFileError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputFileError(f"{path}: reading '{tree}' failed, truncated or corrupt? ({exc})") from None


def collection(chunk: Mapping[str, ak.Array], name: str, fields: Iterable[str]) -> ak.Array:
    """Zip the branches ``{name}_{field}`` of a chunk into one jagged record array."""
    return ak.zip({f: chunk[f"{name}_{f}"] for f in fields})


def read_runs(path: str | os.PathLike) -> dict[str, float] | None:
    """Sum the ``Runs`` tree of a NanoAOD file (genEventCount, genEventSumw, ...); None if absent."""
    import uproot

    with uproot.open(path) as f:
        if "Runs" not in f.keys(cycle=False):
            return None
        runs = f["Runs"]
        out: dict[str, float] = {}
        names = set(runs.keys())
        for key in ("genEventCount", "genEventSumw", "genEventSumw2"):
            # NanoAOD before v9 (and coffea's test files) spell these with a trailing underscore.
            for name in (key, f"{key}_"):
                if name in names:
                    out[key] = float(np.sum(runs[name].array(library="np")))
                    break
        for key in ("xsec_pb", "xsec_err_pb"):
            if key in runs.keys():
                out[key] = float(runs[key].array(library="np")[0])
        return out


# --------------------------------------------------------------------------------------------
# ROOT output
# --------------------------------------------------------------------------------------------
def _as_branch_arrays(
    events: Mapping[str, object], collections: Iterable[str]
) -> dict[str, object]:
    """Split a chunk into what ``mktree``/``extend`` want: jagged records and flat arrays."""
    out: dict[str, object] = {}
    coll = set(collections)
    for name, value in events.items():
        if name in coll:
            out[name] = value if isinstance(value, ak.Array) else ak.Array(value)
        else:
            out[name] = np.asarray(value)
    return out


def _branch_types(arrays: Mapping[str, object]) -> dict[str, object]:
    types = {}
    for name, value in arrays.items():
        types[name] = value.type.content if isinstance(value, ak.Array) else value.dtype
    return types


def write_nanoaod(
    path: str | os.PathLike,
    events: Mapping[str, object],
    collections: Iterable[str],
    runs: Mapping[str, object] | None = None,
    chunk_size: int = DEFAULT_WRITE_CHUNK,
) -> None:
    """Write a NanoAOD ``Events`` TTree (and optionally ``Runs``) atomically.

    ``events`` maps flat branch names (``run``, ``MET_pt``, ...) to 1-D numpy arrays and collection
    names (``Jet``, ``Muon``, ...) listed in ``collections`` to jagged ``ak.zip`` records, which
    uproot writes as ``nJet`` plus ``Jet_pt``, ... . Types must already be those of
    :mod:`pipeline.nanoaod`. The tree is filled in chunks of ``chunk_size`` events.
    """
    import uproot

    arrays = _as_branch_arrays(events, collections)
    n = {len(v) for v in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"branches of {path} have different lengths: {sorted(n)}")
    (n_events,) = n
    with atomic_output(path) as tmp:
        with uproot.recreate(tmp) as f:
            tree = f.mktree("Events", _branch_types(arrays))
            for start in range(0, max(n_events, 1), chunk_size):
                stop = min(start + chunk_size, n_events)
                if stop <= start:
                    break
                tree.extend({k: v[start:stop] for k, v in arrays.items()})
            if runs is not None:
                run_arrays = {k: np.atleast_1d(np.asarray(v)) for k, v in runs.items()}
                f.mktree("Runs", _branch_types(run_arrays)).extend(run_arrays)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (provenance of inputs)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(block):
            h.update(data)
    return h.hexdigest()
