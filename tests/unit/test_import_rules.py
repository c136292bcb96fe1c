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
    assert {"server.py", "worker.py", "train.py", "rl/returns.py", "rl/losses.py", "rl/grads.py"} <= rel
    assert any(r.startswith("distributed/") for r in rel)


def test_rl_is_pure():
    rl = [p for p in FILES if p.parent == PACKAGE / "rl"]
    forbidden = ("torch.distributed", "hydra", "omegaconf", "wandb", "distributed_a3c.distributed")
    assert _violations(rl, forbidden) == []


def test_only_the_distributed_package_imports_torch_distributed():
    outside = [p for p in FILES if PACKAGE / "distributed" not in p.parents]
    assert _violations(outside, ("torch.distributed",)) == []


def test_only_train_imports_hydra():
    others = [p for p in FILES if p != PACKAGE / "train.py"]
    assert _violations(others, ("hydra",)) == []


@pytest.mark.parametrize("name", ["server.py", "worker.py"])
def test_server_and_worker_never_see_rpc(name):
    assert _violations([PACKAGE / name], ("torch.distributed", "distributed_a3c.distributed")) == []
