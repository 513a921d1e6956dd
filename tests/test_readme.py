"""The README's committee example is a valid committee file."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.committee import load_committee

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_committee_example_loads(tmp_path):
    (block,) = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    path = tmp_path / "committee.toml"
    path.write_text(block)

    committee = load_committee(path)

    assert [m.name for m in committee.members] == ["smol", "gemma"]
    assert committee.member("smol").queue == "gpu0"
