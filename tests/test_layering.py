"""One direction of imports: `hf_maskdp.privacy` is what a privacy reviewer reads, and it never
depends on the training layer above it (which calls it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_maskdp"


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of what `source` (a module of `package`) imports, at any depth, relative ones resolved."""
    parts = package.split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_privacy_never_imports_training():
    offending = {}
    for path in sorted((PACKAGE / "privacy").glob("*.py")):
        names = imported_modules(path.read_text(encoding="utf-8"), "hf_maskdp.privacy")
        training = sorted(name for name in names if name.startswith("hf_maskdp.training"))
        if training:
            offending[str(path.relative_to(PACKAGE.parent))] = training
    assert not offending, f"hf_maskdp/privacy imports hf_maskdp/training (move that code to training/): {offending}"


def test_the_scan_sees_every_form_of_import():
    cases = {
        "from ..training.trainer import MaskDPTrainer": "hf_maskdp.training.trainer",
        "from .. import training": "hf_maskdp.training",
        "from ..training import trainer": "hf_maskdp.training.trainer",
        "import hf_maskdp.training.config": "hf_maskdp.training.config",
        "def f():\n    from hf_maskdp.training.collator import VideoClipCollator": "hf_maskdp.training.collator",
    }
    for code, expected in cases.items():
        assert expected in imported_modules(code, "hf_maskdp.privacy"), code
    assert imported_modules("from .accounting import ACCOUNTANTS", "hf_maskdp.privacy") == {
        "hf_maskdp.privacy.accounting",
        "hf_maskdp.privacy.accounting.ACCOUNTANTS",
    }
