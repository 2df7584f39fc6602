"""`lwst.failures`' one-line helpers: the first line of an exception, a whole text on one line."""

from __future__ import annotations

from lwst import dataset
from lwst.failures import first_line, one_line


def test_first_line_keeps_the_first_line_with_its_whitespace_folded():
    exc = OSError("  cannot\tconnect   to host  \nTraceback detail\nmore")
    assert first_line(exc) == "cannot connect to host"


def test_first_line_of_an_empty_message_is_the_type_name():
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(ValueError("  \n ")) == "ValueError"


def test_one_line_folds_every_line_and_marks_a_cut():
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 300) == "x" * 300
    cut = one_line("y" * 301)
    assert len(cut) == 300 and cut.endswith("...")
    assert one_line(KeyError("k"), limit=10) == "'k'"


def test_dataset_still_offers_one_line():
    assert dataset.one_line is one_line
