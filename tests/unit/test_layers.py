"""The library's layers (README "Architecture"), read from the imports themselves.

Every module of ``robustmaps/`` belongs to one layer; a module imports only from its own layer
or those below it (imports inside functions count: they used to hide circles), the modules
import each other in no circle, and an import inside a function says why it is there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "robustmaps"

#: low to high; a module is named by its dotted path without ``robustmaps.``; a package's name
#: covers its submodules
LAYERS = {
    "base": ["io", "grid", "parallel", "locks", "runner", "devices", "checkpoints", "metrics", "config",
             "settings"],
    "data": ["atlas", "cohort", "qc", "preprocess", "splits", "privacy", "volumes"],
    "models": ["models", "trained", "training", "hpo"],
    "methods": ["masks", "sweep", "saliency", "faithfulness"],
    "analysis": ["roi", "similarity", "stats", "compare", "transfer"],
    "outputs": ["plots", "provenance"],
    # rule entries (one module per rules/<stage>.smk) and the command-line tools beside them
    "jobs": ["jobs", "acceptance", "config_doc", "envs"],
}
RANK = {name: i for i, name in enumerate(LAYERS)}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            out[name] = path
    return out


def layer_of(module: str) -> str | None:
    for layer, names in LAYERS.items():
        if any(module == n or module.startswith(n + ".") for n in names):
            return layer
    return None


def imports(module: str, path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported library module, line, inside a function, source line) of every import."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    known = modules()
    text = path.read_text()
    tree = ast.parse(text)
    top = {id(node) for node in tree.body}
    lines = text.splitlines()
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("robustmaps"):
                mod = node.module.removeprefix("robustmaps").lstrip(".")
            else:
                continue
            names = [f"{mod}.{a.name}".lstrip(".") if f"{mod}.{a.name}".lstrip(".") in known else mod
                     for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("robustmaps.") for a in node.names if a.name.startswith("robustmaps.")]
        for name in names:
            if name and name != module:
                out.append((name, node.lineno, id(node) not in top, lines[node.lineno - 1].strip()))
    return out


def graph() -> dict[str, set[str]]:
    return {m: {t for t, *_ in imports(m, p)} for m, p in modules().items()}


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []
    listed = [n for names in LAYERS.values() for n in names]
    assert sorted(n for n in listed if n not in modules()) == [], "a listed module does not exist"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module, path in modules().items():
        for target, line, _, source in imports(module, path):
            if RANK[layer_of(target)] > RANK[layer_of(module)]:
                upward.append(f"{path.relative_to(LIBRARY.parent)}:{line} ({layer_of(module)} -> "
                              f"{layer_of(target)}): {source}")
    assert upward == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_modules_import_each_other_in_no_circle():
    # a package's __init__ importing its own submodules is not a circle unless one imports it back
    assert cycles(graph()) == []


def test_an_import_inside_a_function_says_why():
    """Library imports go at the top; one inside a function (to keep a light module light, or
    the search's child process) carries a comment on the lines just above it."""
    silent = []
    for module, path in modules().items():
        lines = path.read_text().splitlines()
        for target, line, local, source in imports(module, path):
            if not local:
                continue
            above = [lines[i].strip() for i in range(max(0, line - 4), line - 1)]
            if not any(a.startswith("#") for a in above) and "#" not in source:
                silent.append(f"{path.relative_to(LIBRARY.parent)}:{line}: {source}")
    assert silent == []


STAGES = sorted(p.stem for p in (LIBRARY.parent / "rules").glob("*.smk") if not p.stem.endswith(".inputs"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_its_entries_in_one_jobs_module(stage):
    """rules/<stage>.smk <-> robustmaps/jobs/<stage>.py, and every script a stage's rules run is
    one call into that module."""
    assert (LIBRARY / "jobs" / f"{stage}.py").is_file()
    rules = (LIBRARY.parent / "rules" / f"{stage}.smk").read_text()
    for script in sorted(set(s for s in _scripts(rules))):
        text = (LIBRARY.parent / "scripts" / script).read_text()
        entries = [line for line in text.splitlines() if line.startswith("from robustmaps.jobs.")]
        assert entries and all(line.startswith(f"from robustmaps.jobs.{stage} import ") for line in entries), \
            f"scripts/{script} (run by rules/{stage}.smk) calls {entries or 'no entry in robustmaps.jobs'}"


def _scripts(smk: str):
    return re.findall(r'script:\s*\n?\s*"\.\./scripts/([a-z_]+\.py)"', smk)


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "common"])
def test_every_stage_keeps_its_paths_and_input_functions_beside_its_rules(stage):
    """rules/<stage>.smk includes rules/<stage>.inputs.smk before its first rule; the inputs file
    defines no rule, the rules file no function (snakemake --lint wants them apart)."""
    rules = (LIBRARY.parent / "rules" / f"{stage}.smk").read_text()
    inputs = (LIBRARY.parent / "rules" / f"{stage}.inputs.smk").read_text()
    include = rules.find(f'include: "{stage}.inputs.smk"')
    first_rule = re.search(r"^\s*rule\b", rules, re.M)
    assert 0 <= include < first_rule.start(), f"rules/{stage}.smk does not include its inputs first"
    assert not re.search(r"^rule ", inputs, re.M) and not re.search(r"^def ", rules, re.M)


def test_paths_that_several_rules_name_are_spelled_once():
    """The store, the split tables, the models and the other files that several rules read are
    spelled in robustmaps.jobs.paths only: the rules and their input functions call it."""
    from robustmaps.jobs import paths

    assert paths.store() == "results/cohort/{cohort}/store.npy" and paths.store("main") == "results/cohort/main/store.npy"
    assert paths.model(0, 2) == "results/models/fold-0/seed-2/model.pt"
    assert paths.fold_table("train") == "results/splits/split-{fold}/train.tsv"
    spelled = []
    for smk in sorted((LIBRARY.parent / "rules").glob("*.smk")) + [LIBRARY.parent / "Snakefile"]:
        for n, line in enumerate(smk.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"results/(cohort/\{|cohort/main|splits/(split-|test|\{)|models/|atlas/|masks/reference|"
                         r"masks/summary|analysis/roi_vectors|training/summary|analysis/similarity/pairs)", code):
                spelled.append(f"{smk.name}:{n}: {line.strip()}")
    assert spelled == []
