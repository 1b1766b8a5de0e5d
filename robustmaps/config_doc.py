"""The key reference of config/README.md, generated from the ``description`` of every key of
config/schema.yaml (a test checks that the two agree).

config/README.md keeps its prose (deviations from the study, demo choices, resources) by hand;
each key table sits between two markers and is written by this module::

    <!-- keys: data -data.cohorts.*.caps -data.cohorts.*.synthetic -->
    | key | default | meaning |
    ...
    <!-- /keys -->

A marker names the keys it lists: every key under the given prefixes, except those under a
prefix written with a leading ``-``. Keys of two or more sibling properties that share one
``$defs`` entry (the cohorts ``main`` and ``independent``) are listed once under ``*``.

    python -m robustmaps.config_doc            # rewrite config/README.md's key tables
    python -m robustmaps.config_doc --check    # exit 1 when they are not current
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "config" / "schema.yaml"
README = REPO / "config" / "README.md"

#: Objects documented as one key (their members are described in its text).
WHOLE = ("train.architecture", "hpo.space", "data.cohorts.*.synthetic.age_mean")

MARKER = re.compile(r"^<!-- keys: (?P<spec>[^>]*?) -->\n(?P<body>.*?)^<!-- /keys -->$", re.M | re.S)
HEADER = "| key | default | meaning |\n|---|---|---|\n"


def _resolve(node: dict, defs: dict) -> dict:
    ref = node.get("$ref")
    if not ref:
        return node
    name = ref.rsplit("/", 1)[-1]
    return {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}


def keys(schema: dict) -> list[dict]:
    """Every documented key in schema order: dicts with ``key`` (dotted, ``*`` for shared
    definitions), ``node`` (the key's own schema, where its description is), ``resolved`` (with
    its ``$ref`` merged in) and ``required``."""
    defs = schema.get("$defs", {})
    out: list[dict] = []

    def walk(node: dict, prefix: str) -> None:
        props = node.get("properties", {})
        required = set(node.get("required", []))
        refs = [p.get("$ref") for p in props.values() if isinstance(p, dict)]
        shared = {r for r in refs if r and refs.count(r) > 1}
        later = {}  # shared definitions: their keys once, under *, after every sibling
        for name, child in props.items():
            key = f"{prefix}{name}"
            resolved = _resolve(child, defs)
            out.append({"key": key, "node": child, "resolved": resolved, "required": name in required})
            if "properties" not in resolved or key in WHOLE:
                continue
            ref = child.get("$ref")
            if ref in shared:
                later.setdefault(ref, resolved)
            else:
                walk(resolved, f"{key}.")
        for resolved in later.values():
            walk(resolved, f"{prefix}*.")

    walk(schema, "")
    return out


def _default(entry: dict) -> str:
    r = entry["resolved"]
    if "default" not in r:
        return "(required)" if entry["required"] else ""
    text = yaml.safe_dump(r["default"], default_flow_style=True, width=10_000, sort_keys=False).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`"


def _selected(key: str, include: list[str], exclude: list[str]) -> bool:
    def under(k, p):
        return k == p or k.startswith(p + ".")
    return any(under(key, p) for p in include) and not any(under(key, p) for p in exclude)


def table(entries: list[dict], spec: str) -> str:
    """The markdown table of the keys that ``spec`` selects (see the module's docstring)."""
    words = spec.split()
    include = [w for w in words if not w.startswith("-")]
    exclude = [w[1:] for w in words if w.startswith("-")]
    rows = []
    for e in entries:
        # a top-level section is the heading of its table, not a row
        if "." in e["key"] and _selected(e["key"], include, exclude):
            desc = " ".join(str(e["node"].get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{e['key']}` | {_default(e)} | {desc} |\n")
    return HEADER + "".join(rows)


def render(readme: str, schema: dict) -> str:
    """``readme`` with every key table regenerated from ``schema``."""
    entries = keys(schema)
    return MARKER.sub(lambda m: f"<!-- keys: {m['spec']} -->\n{table(entries, m['spec'])}<!-- /keys -->", readme)


def missing_descriptions(schema: dict) -> list[str]:
    return [e["key"] for e in keys(schema) if not str(e["node"].get("description", "")).strip()]


def main(argv: list[str]) -> int:
    schema = yaml.safe_load(SCHEMA.read_text())
    text = README.read_text()
    new = render(text, schema)
    missing = missing_descriptions(schema)
    if missing:
        print(f"{SCHEMA}: keys without a description: {', '.join(missing)}", file=sys.stderr)
    if "--check" in argv:
        if new != text:
            print(f"{README} is not current: run python -m robustmaps.config_doc", file=sys.stderr)
            return 1
        return 1 if missing else 0
    README.write_text(new)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
