"""The architecture table of DESIGN section 1, enforced on the source.

Imports point only down the table (events <- coordinator <- projections, worker <- gateway <-
jetgrid's CLI and embedded cluster); no two modules import each other, directly or around a
loop; the NATS driver is imported only by the adapter and the code that receives messages, and
SQLAlchemy only by the read-model store. Imports under ``if TYPE_CHECKING:`` are annotations, not
dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("events", "coordinator", "projections", "worker", "gateway")
# What each layer may import of ours ("jetgrid" is the rest of the package: CLI, embedded, SDK).
MAY_IMPORT: dict[str, set[str]] = {
    "events": set(),
    "coordinator": {"events"},
    "projections": {"events", "coordinator"},
    "worker": {"events", "coordinator"},
    "gateway": {"events", "coordinator", "projections"},
    "jetgrid": {*LAYERS, "jetgrid"},
}
# The NATS adapter, and the code that receives messages (subscriptions, pull and ordered
# consumers, key-value watches). Everything else talks to NATS through coordinator.bus.Bus.
MAY_IMPORT_NATS = {
    "jetgrid.coordinator.bus",
    "jetgrid.coordinator.direct",  # the bus's batched direct gets (bus.py is at 500 lines)
    "jetgrid.coordinator.position",  # a delivered message's stream sequence and time
    "jetgrid.coordinator.provision",
    "jetgrid.worker.puller",  # pull requests and their deliveries
    "jetgrid.worker.tiers",  # the worker's watch on its tier key
    "jetgrid.worker.deadletter",  # the max-deliveries advisories
    "jetgrid.projections.runner",  # the projector's ordered consumers
    "jetgrid.projections.replay",  # a replay's ordered consumers
    "jetgrid.projections.reader",  # a replay's ordered consumer, for its child process
    "jetgrid.projections.pump",  # that child process: a replay's reader
    "jetgrid.projections.pools",  # each worker's latest events, for `jetgrid pools`
    "jetgrid.gateway.board",  # the job board's ordered consumers
    "jetgrid.gateway.fleet",  # the fleet's ordered consumer
    "jetgrid.gateway.sse",  # a job's events, replayed then live
    "jetgrid.demo",  # every job event of the demo's fleet
    "jetgrid.webhooks",  # the webhook services' shared pull consumer
    "jetgrid.gateway.batchstore",  # counting a batch's ended lines (an ephemeral consumer)
}
SQL_LAYER = "projections"


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name, from the real files (not the links)."""
    out: dict[str, Path] = {}
    for top in (*LAYERS, "jetgrid"):
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            if top == "jetgrid" and rel.parts[1] in LAYERS:
                continue  # a link to a layer folder
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts if top == "jetgrid" else ["jetgrid", *parts])
            out[name] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> Iterator[str]:
    """The dotted names a module imports (`from a import b` gives `a.b` and `a`)."""

    def visit(node: ast.AST) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                yield from (n for stmt in child.orelse for n in visit_stmt(stmt))
                continue
            yield from visit_stmt(child)

    def visit_stmt(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        yield from visit(node)

    yield from visit(ast.parse(path.read_text(), str(path)))


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "jetgrid"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {
        name: {i for i in imports(path) if i in mods and i != name} for name, path in mods.items()
    }


def test_no_module_imports_an_architecture_folder_as_a_top_level_name() -> None:
    sources = [*modules().values(), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py")]
    bad = [
        f"{path.relative_to(REPO)} imports {i!r}"
        for path in sources
        for i in imports(path)
        if i.split(".")[0] in LAYERS
    ]
    assert not bad, "import them as jetgrid.<folder>: " + "; ".join(bad)


def upward(g: dict[str, set[str]]) -> list[str]:
    """The edges of `g` that import from a layer the importer may not use."""
    bad = []
    for name, deps in sorted(g.items()):
        allowed = MAY_IMPORT[layer_of(name)] | {layer_of(name)}
        bad += [f"{name} -> {d}" for d in sorted(deps) if layer_of(d) not in allowed]
    return bad


def test_imports_point_only_down_the_architecture_table() -> None:
    bad = upward(graph())
    assert not bad, "imports from a higher layer: " + "; ".join(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return found


def _package_edges_dropped(g: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ re-exporting its own submodules is how a package works, not a cycle:
    # drop the edges from a submodule to the package that contains it.
    return {v: {w for w in ws if not v.startswith(w + ".")} for v, ws in g.items()}


def test_no_import_cycles() -> None:
    found = cycles(_package_edges_dropped(graph()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_a_higher_layer_import_is_caught() -> None:
    g = {
        "jetgrid.worker.x": {"jetgrid.gateway.app", "jetgrid.events.codec"},
        "jetgrid.projections.y": {"jetgrid.worker.x"},
        "jetgrid.cli.up": {"jetgrid.gateway.app", "jetgrid.worker.x"},
    }
    assert upward(g) == [
        "jetgrid.projections.y -> jetgrid.worker.x",
        "jetgrid.worker.x -> jetgrid.gateway.app",
    ]
    assert layer_of("jetgrid.cli.up") == "jetgrid" and layer_of("jetgrid.events.codec") == "events"


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_nats_is_imported_only_by_the_adapter_and_the_receivers() -> None:
    users = {
        name
        for name, path in modules().items()
        if any(i == "nats" or i.startswith("nats.") for i in imports(path))
    }
    assert users <= MAY_IMPORT_NATS, f"publish through coordinator.bus: {users - MAY_IMPORT_NATS}"


def test_sqlalchemy_stays_in_the_read_model_layer() -> None:
    users = {
        name
        for name, path in modules().items()
        if any(i.split(".")[0] == "sqlalchemy" for i in imports(path))
    }
    assert {layer_of(u) for u in users} <= {SQL_LAYER}, sorted(users)


def test_no_module_is_over_500_lines() -> None:
    long = {n: c for n, p in modules().items() if (c := len(p.read_text().splitlines())) > 500}
    assert not long, long
