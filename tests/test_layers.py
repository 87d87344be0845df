"""The package's layers (pyproject.toml's import-linter contracts) hold, and no module imports itself back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """lint-imports on the `emotion` package in `project`, with that project's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_the_package_keeps_its_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_from_a_higher_layer_breaks_the_build(tmp_path):
    shutil.copytree(ROOT / "emotion", tmp_path / "emotion", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    heads = tmp_path / "emotion" / "models" / "heads.py"
    heads.write_text(heads.read_text() + "\nfrom emotion.training.loop import fit  # a model reaching for training\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "emotion.models is not allowed to import emotion.training" in result.stdout
    assert "emotion.models.heads -> emotion.training.loop" in result.stdout


def test_no_module_imports_itself_back_through_others():
    graph = grimp.build_graph("emotion", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.append(" -> ".join((module, *chain)))
    assert cycles == []
