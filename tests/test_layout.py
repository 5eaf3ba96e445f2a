"""Data flows one way (energy -> sampler -> recorder -> diagnostics -> files): no module imports
one further down the line, checked on the source, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "langevin_images"

FORBIDDEN = {
    "linalg": {"energies", "samplers", "recording", "diagnostics", "runs", "cli", "apps"},
    "energies": {"samplers", "recording", "diagnostics", "runs", "cli", "apps"},
    "samplers": {"energies", "diagnostics", "runs", "cli", "apps", "models"},
    "schedules": {"energies", "samplers", "recording", "diagnostics", "runs", "cli"},
    "recording": {"samplers", "diagnostics", "runs", "cli", "apps", "models"},
    "diagnostics": {"samplers", "runs", "cli", "apps"},
    "runs": {"cli"},
}


def _imported(path: Path) -> set[str]:
    """The top-level subpackages of langevin_images that a module imports."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    here = list(rel.parts[:-1])  # the module's package, for relative imports
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level > 1 else here
                parts = [*base, *(node.module.split(".") if node.module else [])]
                names = [parts] if parts else [[a.name] for a in node.names]
            elif node.module and node.module.startswith("langevin_images"):
                names = [node.module.split(".")[1:] or [a.name for a in node.names][:1]]
            else:
                continue
            out.update(n[0] for n in names if n)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("langevin_images."):
                    out.add(a.name.split(".")[1])
    return out


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_no_module_imports_one_further_down_the_line(top):
    files = [PACKAGE / f"{top}.py"] if (PACKAGE / f"{top}.py").exists() else sorted(
        (PACKAGE / top).rglob("*.py")
    )  # fmt: skip
    assert files
    for f in files:
        bad = _imported(f) & FORBIDDEN[top]
        assert not bad, f"{f.relative_to(PACKAGE)} imports {sorted(bad)}"
