"""``lwst --help`` and every built-in command's ``--help`` answer without importing torch or
pandas (audit defect 6: 4.5 s and 900 MB for a help text): a command's engine is imported by
its handler, never by the parser. Checked in a fresh interpreter, on what it imported (not on
timings, which the machine's load decides)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "pandas", "pyarrow", "prefect")

PROBE = f"""
import json, sys
from lwst.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = None
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _last_line(code: str, *argv: str) -> str:
    """The last line ``code`` prints in a fresh interpreter (given ``argv``)."""
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def _help(*argv: str) -> dict:
    """Run ``lwst <argv>`` through `lwst.cli.main` in a fresh interpreter: its exit code and
    the heavy modules it imported."""
    return json.loads(_last_line(PROBE, *argv))


@pytest.mark.parametrize("command", ["stylize", "warp", "make-manifest", "export"])
def test_a_commands_help_imports_neither_torch_nor_pandas(command):
    assert _help(command, "--help") == {"code": 0, "heavy": []}


def test_building_the_parser_of_the_built_in_commands_imports_no_engine():
    probe = ("import sys; from lwst.cli import build_parser, _registrations; "
             "parser = build_parser(_registrations(entry_points=False)); "
             "parser.parse_args(['stylize', '--content', 'a.png', '--out', 'b.png']); "
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert _last_line(probe) == "[]"


def test_a_built_in_command_loads_no_entry_point():
    """``lwst stylize`` does not import ``lwst run``'s module (`flows.cli`) at all."""
    probe = ("import sys; from lwst.cli import main\n"
             "try: main(['stylize', '--help'])\nexcept SystemExit: pass\n"
             "print('flows.cli' in sys.modules)")
    assert _last_line(probe) == "False"


def test_the_top_level_help_imports_neither_torch_nor_pandas():
    assert _help("--help") == {"code": 0, "heavy": []}


@pytest.mark.parametrize("command", ["train-warp", "train-decoder"])
def test_training_commands_import_their_engine_only_when_used(command):
    """Their options quote their engines' defaults, so they are added when the command is
    used (`lwst.cli_options.defer_options`): registering them imports nothing heavy."""
    probe = ("import argparse, sys\n"
             f"from {'lwst.warpnet.cli' if command == 'train-warp' else 'lwst.decoder_cli'} "
             "import add_parser\n"
             "parser = argparse.ArgumentParser(); sub = parser.add_subparsers()\n"
             "add_parser(sub)\n"
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert _last_line(probe) == "[]"


@pytest.mark.parametrize("command", ["train-warp", "train-decoder"])
def test_a_training_commands_help_imports_neither_torch_nor_pandas(command):
    """Their options quote the recipes' defaults, which live in torch-free modules
    (`lwst.warpnet.cli.TrainConfig`, `lwst.decoder_training.config`): 5 s before, for a help
    text."""
    assert _help(command, "--help") == {"code": 0, "heavy": []}


@pytest.mark.parametrize("argv", [
    ["train-warp", "--images", "photos", "--out", "t.pt", "--steps", "5"],
    ["train-decoder", "--kind", "wct", "--images", "photos", "--out", "d.pt", "--steps", "5"]])
def test_parsing_a_training_command_line_imports_no_engine(argv):
    """The engine is imported by the handler, inside `lwst.cli.main`'s handling: a Ctrl-C
    while torch loads is ``lwst: interrupted`` (exit 130), not a traceback out of argparse."""
    probe = ("import sys; from lwst.cli import build_parser, _registrations; "
             "parser = build_parser(_registrations(entry_points=False)); "
             f"parser.parse_args({argv!r}); "
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert _last_line(probe) == "[]"
