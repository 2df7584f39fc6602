"""The docs' defaults tables are the code's: they are parsed and checked against `lwst.config`.

manifests/README.md lists every override column with its default and what it accepts;
docs/method.md lists the defaults that shape the method. A default changed in `lwst/config.py`
(or a new override) without its docs fails here, and so does a documented range or choice list
that the configuration's `validate` does not enforce. Also checked: the repository's own docs
that README.md and the modules cite exist.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from lwst.config import (
    INPAINT_METHODS,
    OPTIMIZERS,
    OVERRIDES,
    RENDERERS,
    WARP_FALLBACKS,
    WARP_FIELDS,
    WARP_METHODS,
    WARP_PRECISIONS,
    StylizeConfig,
    to_params,
    with_overrides,
)
from lwst.vgg import WEIGHT_SOURCES

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS_README = ROOT / "manifests" / "README.md"
METHOD = ROOT / "docs" / "method.md"
CHOICES = {
    "warp_method": WARP_METHODS,
    "warp_field": WARP_FIELDS,
    "warp_fallback": WARP_FALLBACKS,
    "warp_precision": WARP_PRECISIONS,
    "inpaint": INPAINT_METHODS,
    "optimizer": OPTIMIZERS,
    "renderer": RENDERERS,
    "vgg_weights": WEIGHT_SOURCES,
    "preserve_color": ("true", "false"),
}
UNSET = "unset"  # how a table writes a default of None (the code picks the value)


def defaults_table(path: Path) -> dict[str, list[str]]:
    """Rows of ``path``'s markdown tables whose first cell is a backticked override name."""
    rows: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        if name in OVERRIDES:
            assert name not in rows, f"{path.name}: {name} is listed twice"
            rows[name] = cells
    return rows


def code_default(name: str):
    return to_params(StylizeConfig())[name]


def documented_value(cell: str) -> str | None:
    """The backticked literal of a default cell, None for an ``unset: ...`` one."""
    if cell.startswith(UNSET):
        return None
    found = re.match(r"`([^`]*)`", cell)
    assert found, f"default cell {cell!r} is neither a `value` nor '{UNSET}: ...'"
    return found.group(1)


def applied(name: str, text: str):
    """What the configuration makes of ``text`` as a manifest cell (its own type coercion)."""
    return to_params(with_overrides(StylizeConfig(), {name: text}))[name]


def test_manifest_readme_lists_every_override_once():
    rows = defaults_table(MANIFESTS_README)
    assert sorted(rows) == sorted(OVERRIDES)


@pytest.mark.parametrize("doc", [MANIFESTS_README, METHOD], ids=lambda p: p.name)
def test_documented_defaults_are_the_code_defaults(doc: Path):
    rows = defaults_table(doc)
    assert rows, f"{doc.name} has no defaults table"
    wrong = {}
    for name, cells in rows.items():
        text, default = documented_value(cells[1]), code_default(name)
        if text is None or default is None:
            if text is not default:
                wrong[name] = (cells[1], default)
        elif applied(name, text) != default:
            wrong[name] = (text, default)
    assert not wrong, f"{doc.name}: documented vs code default: {wrong}"


def _bound(text: str) -> int | float:
    """``8192``, ``0.1``, ``2^63-1`` -> a number (the docs' range notation)."""
    assert re.fullmatch(r"[0-9.^+-]+", text), text
    power = re.fullmatch(r"(\d+)\^(\d+)([+-]\d+)?", text)
    if power:
        return int(power.group(1)) ** int(power.group(2)) + int(power.group(3) or 0)
    return float(text) if "." in text else int(text)


def _accepts(name: str, value) -> bool:
    try:
        with_overrides(StylizeConfig(), {name: value})
    except ValueError:
        return False
    return True


def numeric_ranges() -> list[tuple[str, int | float, int | float]]:
    found = []
    for name, cells in defaults_table(MANIFESTS_README).items():
        accepted = cells[2]
        span = re.fullmatch(r"([0-9.^+-]+)\.\.([0-9.^+-]+)", accepted)
        floor = re.fullmatch(r">= ([0-9.]+)", accepted)
        if span:
            found.append((name, _bound(span.group(1)), _bound(span.group(2))))
        elif floor:
            found.append((name, _bound(floor.group(1)), math.inf))
    return found


def test_numeric_ranges_are_documented():
    documented = {name for name, _, _ in numeric_ranges()}
    assert {"size", "seed", "warp_strength", "style_strength", "min_warp_confidence",
            "style_weight", "optim_steps", "levels", "style_size"} <= documented


@pytest.mark.parametrize(("name", "low", "high"), numeric_ranges(), ids=lambda v: str(v))
def test_documented_range_is_what_validate_enforces(name: str, low, high):
    integer = isinstance(code_default(name), int) or name == "style_size"
    step = 1 if integer else 1e-6
    assert _accepts(name, low), f"{name}: the documented lower bound {low} is refused"
    assert not _accepts(name, low - step), f"{name}: {low - step} is accepted, below the docs"
    if math.isfinite(high):
        assert _accepts(name, high), f"{name}: the documented upper bound {high} is refused"
        assert not _accepts(name, high + step), f"{name}: {high + step} accepted, above the docs"


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_documented_choices_are_the_code_choices(name: str):
    cell = defaults_table(MANIFESTS_README)[name][2]
    assert set(re.findall(r"`([^`]*)`", cell)) == set(CHOICES[name])


def test_cited_docs_exist():
    """README links and module citations point at docs the repository holds."""
    for link in re.findall(r"\]\(((?:docs|manifests)/[^)#]+)", (ROOT / "README.md").read_text()):
        assert (ROOT / link).is_file(), f"README links to missing {link}"
    cited = set()
    for path in [*ROOT.glob("lwst/**/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("tasks/*.py")]:
        cited |= set(re.findall(r"docs/[a-z_]+\.md", path.read_text()))
    missing = [c for c in sorted(cited) if not (ROOT / c).is_file()]
    assert not missing, f"modules cite missing docs: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_docs_resolve():
    """Relative links among README.md, docs/ and manifests/README.md name files and headings
    that exist."""
    pages = [ROOT / "README.md", MANIFESTS_README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#:\s]*\.md)?(?:#([^)\s]+))?\)",
                                         page.read_text()):
            if not target and not anchor:
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.is_file():
                broken.append(f"{page.name} -> {target}")
            elif anchor and anchor not in {_slug(h) for h in re.findall(
                    r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)}:
                broken.append(f"{page.name} -> {target}#{anchor}")
    assert not broken, broken


def test_the_metadata_columns_are_documented_in_the_schemas_order():
    """contracts.md promises the table lists `SCHEMA`'s columns in order: readers rely on it."""
    from lwst.metadata import SCHEMA

    section = (ROOT / "docs" / "contracts.md").read_text().split("## Metadata columns", 1)[1]
    section = section.split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| (`[^|]+) \|", section, flags=re.MULTILINE)
    documented = [name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+)`", cell)]
    assert documented == [f.name for f in SCHEMA]


_CODE_NAME = re.compile(r"`((?:lwst|flows|tasks)(?:\.\w+)*)::([\w.]+)`((?:,\s*`[\w.]+`)*)")


def _documented_code_names() -> list[tuple[str, str, str]]:
    """``(doc, module, name)`` for every `module::name` the docs cite, and the bare names listed
    right after one (``lwst.render::pyramid_schedule`, `upsample_solution``: same module)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        for match in _CODE_NAME.finditer(page.read_text()):
            module, first, more = match.groups()
            for name in [first, *re.findall(r"`([\w.]+)`", more)]:
                found.append((page.name, module, name))
    return found


def test_code_the_docs_name_exists():
    """Every ``module::name`` in README.md and docs/ resolves: a renamed or removed function
    fails here instead of leaving a reader looking for it."""
    import importlib

    names = _documented_code_names()
    assert len(names) > 100  # the pattern still finds the docs' citations
    missing = []
    for page, module, name in names:
        try:
            target = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            missing.append(f"{page}: {module}::{name}")
    assert not missing, missing
