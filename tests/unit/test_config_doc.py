"""config/README.md's key reference is generated from the schema's descriptions
(robustmaps.config_doc): every key has one, and the README's tables are current."""

import yaml

from robustmaps import config_doc


def schema():
    return yaml.safe_load(config_doc.SCHEMA.read_text())


def test_every_schema_key_has_a_description():
    assert config_doc.missing_descriptions(schema()) == []


def test_readme_key_tables_are_generated_from_the_schema():
    text = config_doc.README.read_text()
    assert text.count("<!-- keys: ") == text.count("<!-- /keys -->") >= 17
    assert config_doc.render(text, schema()) == text, "run: python -m robustmaps.config_doc"


def test_every_documented_key_is_in_one_table():
    text = config_doc.README.read_text()
    listed = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
    documented = [e["key"] for e in config_doc.keys(schema()) if "." in e["key"]]
    assert sorted(k for k in listed if k in documented) == sorted(documented)   # each once
    assert "analysis.cut_coords" in listed


def test_a_changed_description_makes_the_readme_stale_and_the_prose_is_kept():
    s = schema()
    s["properties"]["qc"]["properties"]["min_max_gm"]["description"] = "a new text"
    text = config_doc.README.read_text()
    new = config_doc.render(text, s)
    assert new != text and "| `qc.min_max_gm` | `0.95` | a new text |" in new
    # only the tables change: the text outside the markers is the same
    strip = config_doc.MARKER.sub("", text)
    assert config_doc.MARKER.sub("", new) == strip and "Deviations from the study" in strip


def test_generation_on_a_small_schema():
    s = {"properties": {
        "a": {"type": "object", "description": "section", "properties": {
            "x": {"type": "integer", "default": 3, "description": "an int | with a bar"},
            "need": {"type": "string", "description": "needed"},
            "one": {"$ref": "#/$defs/d", "description": "first"},
            "two": {"$ref": "#/$defs/d", "description": "second"}},
            "required": ["need"]}},
        "$defs": {"d": {"type": "object", "properties": {"k": {"default": [1, 2], "description": "shared"}}}}}
    assert [e["key"] for e in config_doc.keys(s)] == ["a", "a.x", "a.need", "a.one", "a.two", "a.*.k"]
    table = config_doc.table(config_doc.keys(s), "a -a.*")
    assert table.splitlines()[2:] == ["| `a.x` | `3` | an int \\| with a bar |", "| `a.need` | (required) | needed |",
                                      "| `a.one` |  | first |", "| `a.two` |  | second |"]
    assert config_doc.table(config_doc.keys(s), "a.*").splitlines()[2:] == ["| `a.*.k` | `[1, 2]` | shared |"]
    del s["properties"]["a"]["properties"]["x"]["description"]
    assert config_doc.missing_descriptions(s) == ["a.x"]
