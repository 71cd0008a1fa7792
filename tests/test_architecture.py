"""The architecture of docs/architecture.md, checked: layers, one glue module, thin scripts named
after their rules, small modules, no workflow paths in the library."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "pipeline"
SCRIPTS = REPO / "workflow" / "scripts"
RULES = REPO / "workflow" / "rules"
# A module longer than this says why at its top, in a line starting with LONG_MODULE_REASON.
MAX_MODULE_LINES = 450
LONG_MODULE_REASON = "Why this module is long:"
GLUE = LIBRARY / "glue.py"


def _library_modules() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_contracts_hold():
    """lint-imports: the layers of pyproject.toml (the library never imports its Snakemake glue,
    capabilities do not import each other) and no import cycle between siblings."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout, proc.stdout[-3000:]



def test_snakemake_lint_passes():
    """`snakemake --lint` (run by `make test` after pytest): rule files hold only rules, every rule
    has its log, no mixed functions; caught here so a lint regression fails in the fast tests."""
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    proc = subprocess.run([exe, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]

def test_no_snakemake_object_in_the_library():
    """No function under src/pipeline (the glue module aside) takes ``smk``/``snakemake`` or reads
    one of the Snakemake object's attributes."""
    offenders = []
    for path in _library_modules():
        if path == GLUE:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
                offenders += [f"{path.relative_to(REPO)}:{node.lineno} argument {n}" for n in names
                              if n in ("smk", "snakemake")]
            if isinstance(node, ast.Name) and node.id in ("smk", "snakemake"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} name {node.id}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if mod and (mod == "snakemake" or mod.startswith("snakemake.")):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {mod}")
    assert not offenders, "\n".join(offenders)


def test_library_builds_no_workflow_paths():
    """Where outputs live is the workflow's business: no ``results/...`` literal in library code
    (docstrings and comments aside)."""
    offenders = []
    for path in _library_modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and re.match(r"^results/", node.value)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not offenders, "\n".join(offenders)


def test_modules_are_small_or_say_why():
    too_long = []
    for path in _library_modules():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(LONG_MODULE_REASON in line for line in lines[:40]):
            too_long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines without '{LONG_MODULE_REASON}' at the top:\n" + \
        "\n".join(too_long)


def _rule_scripts() -> dict[str, str]:
    """rule name -> script file name, from every ``rule X:`` block with a ``script:`` directive."""
    out = {}
    for smk in sorted(RULES.glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            m = re.match(r"^rule (\w+):", line)
            if m:
                rule = m.group(1)
            m = re.match(r'^\s+"\.\./scripts/([\w.]+)"', line)
            if m and rule:
                out[rule] = m.group(1)
    return out


def test_scripts_are_named_after_their_rules_and_share_one_style():
    scripts = _rule_scripts()
    assert scripts, "no rule with a script: found"
    wrong = {r: s for r, s in scripts.items() if s != f"{r}.py"}
    assert not wrong, f"scripts not named after their rule: {wrong}"
    on_disk = {p.name for p in SCRIPTS.glob("*.py")}
    assert on_disk == set(scripts.values()), f"scripts without a rule: {sorted(on_disk - set(scripts.values()))}"
    for name in sorted(on_disk):
        text = (SCRIPTS / name).read_text()
        tree = ast.parse(text)
        # every script: imports the glue, defines main(smk), ends with run(snakemake, main)
        assert "from pipeline.glue import" in text, f"{name}: does not use pipeline.glue"
        funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert funcs == ["main"], f"{name}: define exactly one function, main(smk), not {funcs}"
        last = tree.body[-1]
        assert (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
                and ast.unparse(last.value) == "run(snakemake, main)"), f"{name}: must end with run(snakemake, main)"
