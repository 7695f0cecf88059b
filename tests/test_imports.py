"""The package's import graph: no cycles (imports inside functions count), inference loads no training code."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from pathlib import Path

import torch

import facepcl

PACKAGE = Path(facepcl.__file__).parent


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: line}, from every import statement (functions included).

    ``from . import x`` and ``from .a import b`` resolve to the deepest module
    that exists. A package's ``__init__.py`` importing its submodules is an
    edge like any other, so a submodule that imports its own package (``from
    . import name`` of something the ``__init__`` defines) closes a cycle.
    """
    top = package.name
    files = {}
    for p in package.rglob("*.py"):
        parts = [top, *p.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = p
    edges: dict[str, dict[str, int]] = {m: {} for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from pkg import sub` imports the submodule; `from pkg import name` imports pkg itself
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and t != top:
                    edges[mod].setdefault(t, node.lineno)
    return edges


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_made_by_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n\ndef f():\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None
    assert set(cycle) == {"pkg.a", "pkg.sub.b"}
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_the_cycle_finder_sees_cycles_through_package_init_files(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("from .run import main\n")
    (pkg / "train" / "run.py").write_text("def main():\n    from ..cli import ARGS\n")
    (pkg / "cli.py").write_text("ARGS = 1\n\ndef run():\n    from .train import main\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None
    assert {"pkg.cli", "pkg.train", "pkg.train.run"} <= set(cycle)


def test_facepcl_has_no_import_cycle():
    edges = import_graph(PACKAGE)
    assert "facepcl.heads._predict" in edges
    assert "facepcl.hub" in edges["facepcl.heads._predict"]
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {edges[a][b]})" for a, b in itertools.pairwise(cycle)) + f" -> {cycle[-1]}"


def test_saving_needs_no_loading_code():
    edges = import_graph(PACKAGE)
    assert "facepcl.hub" not in edges["facepcl.model"]
    assert "facepcl.hub" not in edges["facepcl.model._save"]
    assert not any(m.startswith("facepcl.heads") for m in edges["facepcl.hub"])


_INFERENCE = """
import json, sys
import numpy as np
import facepcl
from facepcl.heads import attach_head, load_head

model = facepcl.load(sys.argv[1], head="fer", device="cpu")
attach_head(model, load_head(sys.argv[1], "pose"))
crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
res = facepcl.embed(crop, model=model, detect=False)
print(json.dumps({"predictions": sorted(res.predictions), "rows": len(res),
                  "modules": sorted(m for m in sys.modules if m.startswith("facepcl"))}))
"""


def test_inference_with_heads_imports_no_training_or_evaluation_code(random_model_dir, tmp_path):
    from facepcl._utils.digest import encoder_digest
    from facepcl.config import feature_dim
    from facepcl.heads import HeadSpec, TaskHead, save_head

    folder = tmp_path / "model"
    folder.mkdir()
    for f in random_model_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    model = facepcl.hub.load(folder, device="cpu")
    for name, task, out in (("fer", "classification", 7), ("pose", "regression", 3)):
        torch.manual_seed(out)
        # The digest makes attach_head compare the encoder's weights: the check runs in the child.
        save_head(TaskHead(HeadSpec(name=name, task=task, features=["trunk"], input_size=64, in_dim=feature_dim(64),
                                    out_dim=out, encoder={"encoder_sha256": encoder_digest(model)})), folder)
    out = subprocess.run([sys.executable, "-c", _INFERENCE, str(folder)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["predictions"] == ["fer", "pose"]
    assert report["rows"] == 1
    loaded = report["modules"]
    assert "facepcl.heads._predict" in loaded
    assert "facepcl._utils.digest" in loaded  # the code under test did run
    assert [m for m in loaded if m.startswith(("facepcl.eval", "facepcl.train"))] == []
    assert [m for m in loaded if m.endswith(("_train", "_finetune"))] == []


_EMBED = """
import json, sys
import facepcl
res = facepcl.embed(sys.argv[1], model=sys.argv[2], device="cpu")
print(json.dumps({"faces": len(res), "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_embedding_needs_only_the_core_dependencies(random_model_dir):
    # The default install leaves out torchvision, facexlib and faiss (docs/install.md): detection and embedding
    # must not import them, nor anything of the optional extras.
    photo = Path(__file__).resolve().parents[1] / "examples" / "images"
    image = sorted(p for p in photo.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0]
    out = subprocess.run([sys.executable, "-c", _EMBED, str(image), str(random_model_dir)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["faces"] >= 1  # detection ran
    optional = {"torchvision", "facexlib", "faiss", "yaml", "matplotlib", "sklearn", "pandas", "gradio", "fastapi"}
    assert optional.isdisjoint(report["modules"]), optional & set(report["modules"])


def test_layers_contract_holds():
    """pyproject.toml's import-linter contracts (layers; inference never imports training) are kept."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint) if lint.exists() else "lint-imports", "--no-cache"], capture_output=True,
                         text=True, cwd=PACKAGE.parent, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_top_level_is_a_map_of_public_modules():
    """At most 16 modules at the top of facepcl/, and no public name of facepcl defined in a private module."""
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 16, modules
    private = [m for m in modules if m.startswith("_") and m not in ("__init__", "__main__")]
    assert private == [], f"private top-level modules: {private}"
    for name in facepcl.__all__:
        where = getattr(getattr(facepcl, name), "__module__", "facepcl") or "facepcl"
        assert not any(part.startswith("_") and part not in ("__init__",) for part in where.split(".")[1:2]), (
            f"facepcl.{name} is defined in {where}")
