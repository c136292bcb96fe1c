"""Import direction, checked with `ast`: the math knows nothing of processes, only the edges do."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "distributed_a3c"
FILES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str = "distributed_a3c.x", is_package: bool = False) -> set[str]:
    """Every module an import statement names, anywhere in the file (also inside functions).

    `from a import b` yields both `a` and `a.b` (b may be a submodule); relative imports are resolved
    against `module`.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _imports(path: Path) -> set[str]:
    return imported_modules(path.read_text(), _module_name(path), path.name == "__init__.py")


def _matches(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


def _violations(paths, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(PACKAGE.parent)} imports {name}"
        for p in paths
        for name in sorted(_imports(p))
        if any(_matches(name, f) for f in forbidden)
    ]


def test_the_scanner_sees_every_import_form():
    src = """
import torch.distributed.rpc as rpc
from torch import distributed as dist
from torch.distributed import init_process_group
from ..distributed import roles
from . import returns

def lazy():
    import wandb
    from omegaconf import OmegaConf
"""
    names = imported_modules(src, "distributed_a3c.rl.losses")
    for expected in (
        "torch.distributed.rpc",
        "torch.distributed",
        "distributed_a3c.distributed.roles",
        "distributed_a3c.rl.returns",
        "wandb",
        "omegaconf",
    ):
        assert expected in names
    assert _matches("torch.distributed.rpc", "torch.distributed")
    assert not _matches("torch.distributions", "torch.distributed")


def test_files_were_found():
    rel = {str(p.relative_to(PACKAGE)) for p in FILES}
    assert {"server/params.py", "worker/gradient.py", "train.py", "rl/returns.py", "config/schema.py"} <= rel
    assert any(r.startswith("distributed/") for r in rel)


# The layers, lowest first. A module may import its own layer and the ones below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("rl: the algorithm, pure torch", ("distributed_a3c.rl",)),
    ("config", ("distributed_a3c.config",)),
    ("envs", ("distributed_a3c.envs",)),
    (
        "models, messages, metrics, checkpoints",
        (
            "distributed_a3c.models",
            "distributed_a3c.messages",
            "distributed_a3c.metrics",
            "distributed_a3c.checkpoint",
            "distributed_a3c.policy_eval",
        ),
    ),
    ("server: the parameter server and its parts", ("distributed_a3c.server",)),
    ("worker", ("distributed_a3c.worker",)),
    ("trainer: the run lifecycle", ("distributed_a3c.trainer", "distributed_a3c.build", "distributed_a3c.run_record")),
    ("edge: RPC, torchrun, signals", ("distributed_a3c.distributed",)),
    (
        "entry points",
        ("distributed_a3c.train", "distributed_a3c.sweep", "distributed_a3c.evaluate", "distributed_a3c.plot"),
    ),
]

# Third-party modules and the only layers (or files) allowed to import them.
OUTSIDE = {
    "torch.distributed": ("distributed_a3c.distributed",),
    "hydra": ("distributed_a3c.train", "distributed_a3c.sweep"),
    "omegaconf": ("distributed_a3c.train", "distributed_a3c.evaluate"),
    "wandb": ("distributed_a3c.metrics",),
    "gymnasium": (
        "distributed_a3c.envs",
        "distributed_a3c.models",
        "distributed_a3c.worker",
        "distributed_a3c.trainer",
        "distributed_a3c.build",
        "distributed_a3c.evaluate",
    ),
    "ale_py": ("distributed_a3c.envs",),
}


def _layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(_matches(module, p) for p in prefixes):
            return index
    return None


def test_every_module_has_a_layer():
    unplaced = [_module_name(p) for p in FILES if _layer_of(_module_name(p)) is None]
    assert unplaced in ([], ["distributed_a3c"]), unplaced


def upward_imports(imports: dict[str, set[str]]) -> list[str]:
    """Each import of a module in a higher layer than the importer's, as one line."""
    upward = []
    for module, names in sorted(imports.items()):
        own = _layer_of(module)
        if own is None:
            continue
        for name in sorted(names):
            target = _layer_of(name)
            if target is not None and target > own:
                upward.append(f"{module} ({LAYERS[own][0]}) imports {name} ({LAYERS[target][0]})")
    return upward


def import_cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among `imports`' modules (module -> the package modules it names), each as a
    list of modules, one per strongly connected component of more than one module or a self-import.

    `from pkg import name` names `pkg` and, if it is a module, `pkg.name`; a package's `__init__` is its
    own module, so a submodule importing its package's public face from inside it is a cycle.
    """
    graph = {m: sorted(n for n in names if n in imports) for m, names in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _package_imports() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in FILES}


def test_imports_point_down_the_layers():
    assert upward_imports(_package_imports()) == []


def test_no_import_cycle_anywhere_in_the_package():
    assert import_cycles(_package_imports()) == []


def test_the_checks_catch_a_wrong_arrow_and_a_cycle():
    """The two checks above, on made-up import graphs: each must see what it is for."""
    wrong_arrow = {"distributed_a3c.server.params": {"distributed_a3c.worker.gradient"}}
    assert upward_imports(wrong_arrow) == [
        "distributed_a3c.server.params (server: the parameter server and its parts) imports "
        "distributed_a3c.worker.gradient (worker)"
    ]
    # config.rules -> config (the package's public face) -> config.rules: the cycle this layout removed.
    cycle = {
        "distributed_a3c.config": {"distributed_a3c.config.rules", "distributed_a3c.config.schema"},
        "distributed_a3c.config.rules": {"distributed_a3c.config"},
        "distributed_a3c.config.schema": set(),
        "distributed_a3c.rl.returns": {"distributed_a3c.rl.returns"},
    }
    assert import_cycles(cycle) == [
        ["distributed_a3c.config", "distributed_a3c.config.rules"],
        ["distributed_a3c.rl.returns"],
    ]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", sorted(OUTSIDE))
def test_third_party_modules_stay_where_they_belong(package):
    allowed = OUTSIDE[package]
    others = [p for p in FILES if not any(_matches(_module_name(p), a) for a in allowed)]
    assert _violations(others, (package,)) == []
