"""One set of pins: requirements.txt (the lock), envs/robustmaps.yaml and pyproject agree."""
import re
from pathlib import Path

from robustmaps.envs import conda_pins, requirement_pins

REPO = Path(__file__).resolve().parents[2]


def test_conda_env_pins_exactly_the_lock():
    assert conda_pins(REPO / "envs" / "robustmaps.yaml") == requirement_pins(REPO / "requirements.txt")


def test_every_line_of_the_lock_is_pinned_and_torch_is_the_local_build():
    lines = [l for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    pins = requirement_pins(REPO / "requirements.txt")
    assert len(pins) == len(lines)
    assert pins["torch"] == "2.13.0"


def test_every_declared_dependency_is_in_the_lock():
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[(.*?)\]", text, re.S).group(1)
    names = {re.sub(r"[-_.]+", "-", d).lower() for d in re.findall(r'"([^"]+)"', deps)}
    assert names <= set(requirement_pins(REPO / "requirements.txt"))


def test_every_rule_uses_the_pinned_env():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        # every rule defined here, named or defined in a loop (`rule:` with `name:`); a
        # `use rule ... with:` inherits its rule's environment. A `run:` rule runs inside
        # Snakemake's own process, where Snakemake allows no conda env (the provenance rule)
        bodies = re.split(r"^\s*rule(?: \w+)?:", text, flags=re.M)[1:]
        needs_env = [b for b in bodies if not re.search(r"^\s+run:$", b, re.M)]
        assert len(needs_env) == len(re.findall(r"^\s+ENV\n", text, re.M)), smk.name
