"""README.md stays true to the code: its node table is the one the schemas give, the error
messages it quotes are the pack's own, and the pictures and files it names exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"


def _shingles(words: list[str], n: int = 3) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z_]+", text.lower())


def test_node_table_matches_the_schemas():
    proc = subprocess.run([sys.executable, str(ROOT / "tests/tools/node_table.py"), "--check", str(DOC)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_quoted_messages_are_the_packs_own():
    """Each message quoted in Troubleshooting (a "> " line) must be found in nodes/ or bolid_lib/: at least 60% of its 3-word
    runs occur in the source (the rest are the values a message fills in)."""
    source = "\n".join(p.read_text() for d in ("nodes", "bolid_lib") for p in (ROOT / d).rglob("*.py"))
    known = _shingles(_words(source))
    text = DOC.read_text()
    section = text[text.index("## Troubleshooting"):]
    section = section[:section.index("\n## ", 1)]
    quotes = [line[2:] for line in section.splitlines() if line.startswith("> ")]
    assert len(quotes) >= 6
    for quote in quotes:
        runs = _shingles(_words(quote))
        found = len(runs & known) / max(1, len(runs))
        assert found >= 0.6, f"not the pack's message any more ({found:.0%} found): {quote}"


def test_pictures_and_workflows_named_exist():
    text = DOC.read_text()
    pictures = re.findall(r"\]\((docs/images/[^)]+)\)", text)
    assert len(pictures) >= 4
    for rel in pictures:
        path = DOC.parent / rel
        assert path.is_file() and path.stat().st_size <= 300_000, rel
    for name in re.findall(r"`(bolid_[a-z_]+\.json)`", text):
        assert (ROOT / "example_workflows" / name).is_file(), name
