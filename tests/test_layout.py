"""The code follows the data: imports run one way between harness's stages, rows are typed, every
default has one source, and stored tables carry a format version that every reader understands."""
from __future__ import annotations

import ast
import dataclasses
import pathlib

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness.config import Config, register_configs, to_config
from harness.table import io, schema
from harness.table.row import Row, column_names

HARNESS = pathlib.Path(__file__).resolve().parents[1] / "harness"
CONF = HARNESS.parent / "conf"

# stage -> the harness modules/packages it may import (besides itself). Every module of harness/ has a
# stage (test_every_module_has_a_stage): a new module is placed here on purpose, not exempt by default.
ALLOWED = {
    "harness": set(),                       # the package itself (harness/__init__.py)
    "config": set(),
    "configs": set(),
    "overrides": {"config"},                # command-line values checked against the schema
    "capture": {"config", "configs", "table"},  # a model -> its conv shapes (a suite)
    "table": set(),
    "measure": {"config", "table"},
    "report": {"table"},
    "summary": {"report", "table"},
    "finish": {"report", "summary", "table"},  # how every run ends: aggregate, report, summary
    "launch": set(),                        # Hydra launchers' glue (SLURM, Ray, GPU masks)
    # the public facade (`import convbench`, harness/public/): the conformance suite uses the measuring
    # stage's checks; no other stage imports it (test_nothing_in_harness_imports_the_facade)
    "public": {"measure"},
}
# The front ends: command lines and Hydra's callbacks. They may import any stage; no stage imports them
# (test_no_stage_imports_a_front_end).
ENTRY_POINTS = {"__main__", "aa", "aggregate", "bench_gpu", "callbacks", "network", "perf", "timer_agreement"}


def _stage(module: str) -> str | None:
    """'harness.measure.job' -> 'measure', 'harness' -> 'harness'; a front end (ENTRY_POINTS) or an
    unplaced module -> None."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else parts[0]
    return name if name in ALLOWED else None


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """Every harness module `path` imports (relative imports resolved), lazy ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                found |= {name} if node.module else {f"{name}.{a.name}" for a in node.names}
            else:
                found.add(node.module or "")
    return {m for m in found if m == "harness" or m.startswith("harness.")}


def _modules():
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(HARNESS.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


@pytest.mark.parametrize("path,module", list(_modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_run_one_way(path, module):
    stage = _stage(module)
    if stage is None:
        return
    for imported in _imports(path, module):
        target = imported.split(".")[1] if "." in imported else "harness"  # its stage, or a top-level module
        if target == stage:
            continue
        assert target in ALLOWED[stage], (f"{module} imports {imported}: the {stage} stage may import only "
                                          f"{sorted(ALLOWED[stage]) or 'nothing else of harness'}")


def test_every_module_has_a_stage():
    """No module is exempt from the direction rule by being new: each is a stage or a front end."""
    unplaced = [m for _, m in _modules() if _stage(m) is None and m.split(".")[1] not in ENTRY_POINTS]
    assert not unplaced, f"place these in ALLOWED or ENTRY_POINTS of tests/test_layout.py: {unplaced}"


def test_no_stage_imports_a_front_end():
    for path, module in _modules():
        if _stage(module) is None:
            continue
        for imported in _imports(path, module):
            parts = imported.split(".")
            assert not (len(parts) > 1 and parts[1] in ENTRY_POINTS), f"{module} imports the front end {imported}"


def test_the_implementations_never_import_the_harness():
    """Built-ins are plug-ins like any other: they see torch, not the harness that judges them."""
    for path in (HARNESS.parent / "implementations").rglob("*.py"):
        module = "implementations." + path.stem
        assert not _imports(path, module), f"{module} imports {_imports(path, module)}"


def test_nothing_in_harness_imports_the_facade():
    """`convbench` (harness/public/) sits on top: the harness and the implementations never import it."""
    for path in [*HARNESS.rglob("*.py"), *(HARNESS.parent / "implementations").rglob("*.py")]:
        if "public" in path.relative_to(HARNESS.parent).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n == "convbench" or n.startswith(("convbench.", "harness.public")) for n in names), path


def test_the_direction_test_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.report.analysis import enrich\nfrom ..measure import job\n")
    imported = _imports(bad, "harness.table.bad")
    assert imported == {"harness.report.analysis", "harness.measure"}
    assert all(_stage(m) not in ALLOWED["table"] for m in imported)


def test_no_import_circle_between_modules():
    graph = {module: {m for m in _imports(path, module)} for path, module in _modules()}
    names = set(graph)

    def resolve(m):  # 'harness.table.schema.Status' style names point at their module
        while m and m not in names:
            m = m.rpartition(".")[0]
        return m

    graph = {k: {resolve(m) for m in v if resolve(m) and resolve(m) != k} for k, v in graph.items()}
    # a package's __init__ importing its own submodule is not a circle
    graph = {k: {m for m in v if not m.startswith(k + ".")} for k, v in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            cycle = trail[trail.index(node):] + [node]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph.get(node, ()):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_row_fields_are_the_schema_columns():
    assert column_names() == list(schema.COLUMNS)
    assert set(Row().as_dict()) == set(schema.COLUMNS)


def test_a_misspelled_column_fails_where_the_row_is_built():
    with pytest.raises(TypeError):
        Row(time_medain_s=1.0)  # type: ignore[call-arg]
    with pytest.raises(KeyError, match="time_medain_s"):
        schema.frame([{"impl": "x", "time_medain_s": 1.0}])


def test_status_is_an_enum_that_reads_as_text():
    assert schema.Status.ok == "ok" and str(schema.Status.timeout) == "timeout"
    row = Row(status=schema.Status.incorrect).as_dict()
    assert row["status"] == "incorrect" and type(row["status"]) is str


def test_app_config_defaults_are_the_dataclass_defaults():
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = to_config(compose(config_name="config"))
    default = Config()
    for f in dataclasses.fields(Config):
        if f.name == "suite":
            continue
        assert getattr(composed, f.name) == getattr(default, f.name), f.name


def test_every_table_carries_its_version_and_old_ones_still_read(tmp_path):
    df = schema.frame([Row(impl="cudnn", status=schema.Status.ok)])
    assert df["table_version"].tolist() == [schema.TABLE_VERSION]
    old = df.drop(columns=["table_version", "concurrent"])  # a version-1 table, before these columns
    old.to_csv(tmp_path / "old.csv", index=False)
    read = io.read_table(tmp_path / "old.csv")
    assert list(read.columns[: len(schema.COLUMNS)]) == list(schema.COLUMNS)
    assert read["table_version"].tolist() == [1] and read["impl"].tolist() == ["cudnn"]


def test_a_table_from_a_newer_convbench_is_refused_clearly(tmp_path):
    df = schema.frame([Row(impl="cudnn")])
    df["table_version"] = schema.TABLE_VERSION + 1
    df.to_parquet(tmp_path / "results.parquet")
    with pytest.raises(io.UnknownTableVersion, match="newer than this convbench reads"):
        io.read_results(tmp_path)
