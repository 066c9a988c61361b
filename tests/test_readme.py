"""The README's reference parts are generated from code; these tests keep the two equal."""
import dataclasses
import re
from pathlib import Path

from harness.table import schema
from harness.config import Config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_columns_table_matches_schema():
    assert schema.columns_markdown() in README, "regenerate the README's table with `python -m harness.table.schema`"


def test_example_plugin_is_quoted_in_full():
    example = (REPO / "examples" / "my_conv.py").read_text().rstrip()
    assert f"```python\n{example}\n```" in README


def test_third_party_test_file_is_quoted_in_full():
    example = (REPO / "examples" / "shiftconv" / "tests" / "test_shiftconv.py").read_text().rstrip()
    assert f"```python\n{example}\n```" in README


def test_every_config_key_is_documented():
    documented = set(re.findall(r"^\| `([a-z_0-9]+)(?:\.[a-z_0-9]+)?` \|", README, re.M))
    keys = {f.name for f in dataclasses.fields(Config)}
    missing = keys - documented
    assert not missing, f"config keys missing from the README's configuration table: {sorted(missing)}"
