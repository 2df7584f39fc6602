"""Only lwst's refusals (`lwst.errors.InputError`) read as the user's input.

Before, any ``ValueError`` (and in the CLI any ``KeyError``) counted as bad input: numpy's
broadcasting error inside lwst gave a pipeline item ``error_kind = "input"`` (``lwst run`` exit
0, nothing flagged) and made ``lwst stylize`` print one line blaming the input (exit 2) instead
of the traceback of a bug."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_inputs import FAST, fine_bug_missing_rows, plant_read_bug, write_manifest_csv

from lwst.errors import InputError
from lwst.failures import failure_kind, failure_reason


def _numpy_bug() -> ValueError:
    """The ValueError numpy raises for a shape bug: what a bug in lwst really looks like."""
    try:
        np.ones(2) + np.ones(3)
    except ValueError as exc:
        return exc
    raise AssertionError("numpy broadcast two shapes that do not fit")


def test_every_refusal_class_is_an_input_error_and_stays_a_value_error():
    from lwst.config import ConfigError
    from lwst.decoders import DecoderCheckpointError
    from lwst.devices import DeviceError
    from lwst.image_io import ImageInputError
    from lwst.manifest import ManifestError
    from lwst.safety import BadCheckpointError
    from lwst.storage import InputRefusedError

    for refusal in (ConfigError, DecoderCheckpointError, DeviceError, ImageInputError,
                    ManifestError, BadCheckpointError, InputRefusedError):
        assert issubclass(refusal, InputError) and issubclass(refusal, ValueError), refusal


def test_a_plain_value_error_or_key_error_is_a_bug_not_an_input():
    bug = _numpy_bug()
    assert failure_kind(bug) == "internal"
    assert failure_kind(KeyError("renderer")) == "internal"
    assert failure_reason(bug).startswith("internal error (a bug in lwst): ValueError: operands")
    refusal = InputError("size must be within 16..8192, got 3")
    assert failure_kind(refusal) == "input"
    assert failure_reason(refusal) == "size must be within 16..8192, got 3"
    assert failure_kind(FileNotFoundError("gone.png")) == "input"  # files stay the user's


def test_an_unreadable_uri_scheme_is_refused_as_an_image_input():
    """fsspec refuses an unknown protocol with a plain ValueError: the input's, named."""
    from lwst.image_io import ImageInputError, read_image

    with pytest.raises(ImageInputError, match=r"^foo://b/x\.png: cannot read \(Protocol not "):
        read_image("foo://b/x.png")


def test_the_cli_shows_a_bug_that_raises_value_error_as_a_bug(tmp_path, monkeypatch, capsys):
    """``lwst stylize`` re-raises it (Python's traceback, exit 1), not "error: ..." exit 2;
    a refusal is still one line, exit 2."""
    import lwst.stylize
    from lwst.cli import main

    bug = _numpy_bug()

    def buggy(*args, **kwargs):
        raise bug

    monkeypatch.setattr(lwst.stylize, "stylize", buggy)
    content = tmp_path / "c.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (90, 120, 200)).save(content)
    argv = ["stylize", "--content", str(content), "--out", str(tmp_path / "o.png"),
            "--size", "32", "--quiet"]
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        main(argv)
    assert not (tmp_path / "o.png").exists()

    assert main([*argv, "--size", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("lwst stylize: error: ")


def test_a_pipeline_item_failed_by_a_value_error_bug_is_internal(tmp_path, image_folder,
                                                                  monkeypatch):
    """The run isolates the item as before, but calls it a bug: ``error_kind = internal`` and
    an ``internal_errors_total`` that makes ``lwst run`` exit 3."""
    from flows.stylize_dataset import stylize_dataset
    from lwst.dataset import read_metadata

    plant_read_bug(monkeypatch, _numpy_bug())
    rows = fine_bug_missing_rows(image_folder)
    out = tmp_path / "out"
    summary = stylize_dataset(str(write_manifest_csv(tmp_path / "m.csv", rows)), str(out),
                              overrides=FAST)
    assert summary["counts"] == {"ok": 1, "failed": 2, "skipped": 0}
    assert summary["internal_errors_total"] == 1
    table = read_metadata(str(out)).to_pandas().set_index("id")
    assert table.loc["bug", "error_kind"] == "internal"
    assert table.loc["bug", "error"].startswith("internal error (a bug in lwst): ValueError: ")
    assert table.loc["missing", "error_kind"] == "input"
