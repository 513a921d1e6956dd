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


def test_the_readme_replay_commands_name_datasets_a_fresh_clone_has_or_fetches(tmp_path, monkeypatch):
    # Given: the commands of the README's replay section, in a clone with an empty dataset cache
    from pipeline.evaluation.catalog import SAMPLE, parse_ref
    from workers.cli import _parser
    from workers.cli_data import replay_paths

    monkeypatch.setenv("PEERBLEND_DATA_DIR", str(tmp_path))
    section = README.read_text().split("## Replaying datasets\n", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[:1]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("peerblend ")]
    fetched = {c[3] for c in commands if c[1:3] == ["data", "fetch"]}
    replays = [c for c in commands if c[1] == "replay" and "FILE..." not in c]

    # Then: each parses, and each dataset it names is a shipped sample or fetched by a command before it
    assert len(replays) >= 4
    for command in replays:
        args = _parser().parse_args(command[1:])
        for ref in args.files:
            found, splits = parse_ref(ref)
            if splits == [SAMPLE]:
                (path,) = replay_paths([ref], fetch=False)
                assert path.is_file(), ref
            else:
                assert ref in fetched and found.fetchable, f"{' '.join(command)}: {ref} is never fetched"
