"""Everything the code and docs cite is in the repository, and docs/ARCHITECTURE.md lists every module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *ROOT.glob("hf_maskdp/**/*.py"),
    *ROOT.glob("scripts/*.py"),
    *ROOT.glob("spaces/*.py"),
    *ROOT.glob("tests/*.py"),
    *ROOT.glob("docs/*.md"),
    ROOT / "README.md",
]
CITED_FILE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
WRITTEN_BY_THE_PACKAGE = {"results.md"}  # files the quickstart writes, not documents it cites


def _cited_files(text: str) -> set[str]:
    return {match for match in CITED_FILE.findall(text) if match not in WRITTEN_BY_THE_PACKAGE}


def test_every_cited_markdown_file_exists():
    missing = []
    for source in SOURCES:
        if source.name == "test_docs.py":
            continue
        for cited in _cited_files(source.read_text(encoding="utf-8")):
            candidates = [ROOT / cited, ROOT / "docs" / cited, source.parent / cited, ROOT / "model_cards" / cited]
            if not any(path.exists() for path in candidates):
                missing.append(f"{source.relative_to(ROOT)} cites {cited}")
    assert not missing, "cited files not in the repository (cite docs/ instead):\n" + "\n".join(missing)


def test_architecture_table_lists_every_module():
    table = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [p for p in ROOT.glob("hf_maskdp/**/*.py") if p.name != "__init__.py"]
    unlisted = [
        str(p.relative_to(ROOT)) for p in modules if p.stem not in table and str(p.relative_to(ROOT)) not in table
    ]
    assert not unlisted, f"modules missing from docs/ARCHITECTURE.md: {unlisted}"
