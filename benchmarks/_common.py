"""What every benchmark script shares: where the data is, and the command-line help style.

The data (``photos/``, ``styles/``, ``pairs/``) is read from ``$LWST_DATA`` when set, else from
``../shared/data`` beside the project's root; every script's ``--data`` (or ``--photos`` /
``--pairs``) overrides both. A missing folder stops the script with one line naming the path
and the override (docs/benchmarks.md, "Data").
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "LWST_DATA"


def data_root() -> Path:
    """``$LWST_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data")


def require_dir(path: str | Path, option: str = "--data") -> Path:
    """``path`` as a Path when it is a folder; else exit with one line naming it and the
    overrides."""
    path = Path(path)
    if not path.is_dir():
        raise SystemExit(f"data folder not found: {path} (set {DATA_ENV}=<folder holding photos/, "
                         f"styles/, pairs/> or pass {option}; see docs/benchmarks.md, 'Data')")
    return path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's help ends with its default, unless the help names it already (``default``
    in the text) or there is none to name (``None``, an off flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


def make_parser(doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the module docstring's first paragraph, whole
    (not cut at its first line), and whose options show their defaults."""
    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(description=first, formatter_class=HelpFormatter, **kwargs)



@contextmanager
def scratch_folder(given: Path | None, prefix: str) -> Iterator[Path]:
    """``given`` when the user named a folder (kept), else a temporary one removed at the end,
    also after a failure: a benchmark leaves nothing behind in /tmp unless asked."""
    if given is not None:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def add_warp_safety_options(parser: argparse.ArgumentParser) -> None:
    """The product's warp-safety settings, defaulting to `lwst.config.WarpConfig`'s, for the
    scripts that measure them (bench_warp_safety.py, real_pairs.py)."""
    from lwst.config import MAX_WARP_VIEWS, WARP_FALLBACKS, WARP_FIELDS, WarpConfig

    defaults = WarpConfig()
    parser.add_argument("--warp-field", default=defaults.field, choices=WARP_FIELDS,
                        help="field the product applies (WarpConfig.field)")
    parser.add_argument("--warp-fallback", default=defaults.fallback, choices=WARP_FALLBACKS,
                        help="what a low-confidence warp falls back to (WarpConfig.fallback)")
    parser.add_argument("--min-warp-confidence", type=float, default=defaults.min_confidence,
                        help="fallback threshold (WarpConfig.min_confidence)")
    parser.add_argument("--warp-views", type=int, default=defaults.views,
                        choices=range(1, MAX_WARP_VIEWS + 1),
                        help="the network's symmetric views (WarpConfig.views)")
