"""The report's text cites its sources as a reader finds them (authors, year, title), never by
the project's internal names (the seed files, METHODS.md, DESIGN.md)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INTERNAL = [
    re.compile(r"\bseeds? ?0\d\d\b", re.I),          # "seed 002", "seed 003's"
    re.compile(r"\bseeds/"),                          # a path into the sources folder
    re.compile(r"\b[0-9a-f]{16}\.txt\b"),            # a source's file name
    re.compile(r"\b(METHODS|DESIGN)(\.md)?\b"),     # the project's own notes
    re.compile(r"\bissue ?#?\d+\b", re.I),           # the project's issue numbers
]


def report_texts():
    """Every caption and report/workflow.rst, and the docstrings of the rules (shown in the report)."""
    for p in sorted((REPO / "report").rglob("*.rst")):
        yield p.relative_to(REPO).as_posix(), p.read_text()
    for p in sorted((REPO / "rules").glob("*.smk")):
        for k, doc in enumerate(re.findall(r'"""(.*?)"""', p.read_text(), flags=re.S)):
            yield f"{p.relative_to(REPO).as_posix()} docstring {k}", doc


@pytest.mark.parametrize("pattern", INTERNAL, ids=lambda p: p.pattern)
def test_no_report_text_names_an_internal_file(pattern):
    found = [(name, m.group(0)) for name, text in report_texts() for m in pattern.finditer(text)]
    assert not found, f"internal names in report text: {found}"


def test_the_patterns_catch_what_they_are_for():
    for bad in ("Sobol indices (seed 001)", "seed 003's eq. 2.20", "see METHODS.md", "seeds/000_49c4d4f708db82b4.txt",
                "issue 21"):
        assert any(p.search(bad) for p in INTERNAL), bad
    for good in ("seeds 0, 1 and 2", "the random seed", "Thibeau-Sutre et al. (2020)", "fold 0 seed 1"):
        assert not any(p.search(good) for p in INTERNAL), good


def test_captions_of_sources_name_authors_and_year():
    """The captions that rest on a source other than the study name it by author and year."""
    captions = REPO / "report" / "captions"
    expect = {"faithfulness_summary.rst": "Weber (2023", "hpo_random_search.rst": "Bertrand (2019",
              "sobol_indices.rst": "Miao and Matveev, 2025", "stats_tests.rst": "Varoquaux and Colliot (2023",
              "brain_masks.rst": "Thibeau-Sutre et al. (2020"}
    for name, cite in expect.items():
        assert cite in (captions / name).read_text(), name


def test_no_report_category_takes_the_name_of_a_snakemake_panel():
    """Snakemake's report defines the link targets Workflow and Statistics for its own panels: a
    category of the same name defines a second target, and docutils prints a "Duplicate explicit
    target name" system message on the report's front page."""
    categories = {m for p in (REPO / "rules").glob("*.smk") for m in re.findall(r'category="([^"]+)"', p.read_text())}
    categories |= {m for m in re.findall(r'report_views\([^)]*?"([^"]+)",\s*"[^"]+"\s*\)',
                                         "".join(p.read_text() for p in (REPO / "rules").glob("*.smk")), re.S)}
    assert "Masks" in categories and "Variance and tests" in categories
    assert not {c.lower() for c in categories} & {"workflow", "statistics"}
