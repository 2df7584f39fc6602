"""A stylised dataset used with its classes: ``lwst export`` (the ImageFolder layout) and
`lwst.stylized_dataset.StylizedImages`, on the output of one real, cheap ``lwst run`` flow:
two labelled classes, an unlabelled item and an item that fails (its content is missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import save_image
from PIL import Image
from pipeline_inputs import FAST, write_manifest_csv

from lwst import dataset
from lwst.errors import InputError
from lwst.export import UNLABELLED
from lwst.metadata import empty_record

# What the run leaves: ``dog-bad`` failed (no such content), ``plain`` has no label.
EXPORTED = {"cat/cat-a.png", "cat/cat-b.png", "dog/dog-c.png", f"{UNLABELLED}/plain.png"}
CLASSES = [UNLABELLED, "cat", "dog"]  # sorted as ImageFolder sorts its folders


@pytest.fixture(scope="module")
def run_out(tmp_path_factory, prefect_api) -> Path:
    """One run of the stylize-dataset flow (texture items rendered by adain at 48 px)."""
    from flows.stylize_dataset import stylize_dataset

    root = tmp_path_factory.mktemp("export-run")
    for i, name in enumerate(["cat/a", "cat/b", "dog/c", "plain"]):
        save_image(root / "contents" / f"{name}.png", (48, 64), seed=i)
    texture = str(save_image(root / "styles" / "s.png", (64, 48), seed=9))
    photos = root / "contents"
    rows = [{"id": "cat-a", "content": str(photos / "cat" / "a.png"), "label": "cat"},
            {"id": "cat-b", "content": str(photos / "cat" / "b.png"), "label": "cat"},
            {"id": "dog-c", "content": str(photos / "dog" / "c.png"), "label": "dog"},
            {"id": "dog-bad", "content": str(photos / "dog" / "nowhere.png"), "label": "dog"},
            {"id": "plain", "content": str(photos / "plain.png"), "label": ""}]
    manifest = write_manifest_csv(root / "m.csv", [{**r, "texture": texture} for r in rows])
    out = root / "out"
    summary = stylize_dataset(str(manifest), str(out), overrides={**FAST, "renderer": "adain"},
                              run_id="r1")
    assert summary["counts"] == {"ok": 4, "failed": 1, "skipped": 0}
    return out


def _files(dest: Path) -> set[str]:
    return {str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir()}


def _source(out: Path, key: str) -> Path:
    return out / "images" / key.split("/", 1)[1]


def test_export_hard_links_every_ok_item_into_its_class(run_out: Path, tmp_path: Path, main,
                                                         capsys):
    dest = tmp_path / "by-class"
    assert main(["export", str(run_out), str(dest)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (f"4 exported to {dest} (4 hard-linked), 1 skipped (1 failed, "
                            f"0 no image), 3 classes ({UNLABELLED} holds the items without a "
                            "label)\n")
    assert captured.err == ""
    assert _files(dest) == EXPORTED  # the failed item is not there, no temporary file either
    for key in EXPORTED:
        assert os.path.samefile(dest / key, _source(run_out, key)), key


def test_a_rerun_keeps_what_is_there_and_follows_what_changed(run_out: Path, tmp_path: Path,
                                                               main, capsys):
    out, dest = tmp_path / "out", tmp_path / "by-class"
    shutil.copytree(run_out, out)  # the metadata names run_out's files: found by name here
    assert main(["export", str(out), str(dest)]) == 0
    inode = (dest / "cat" / "cat-b.png").stat().st_ino
    (dest / "cat" / "notes.txt").write_text("mine")  # the user's files stay
    save_image(dest / "cat" / "extra.png", seed=3)
    capsys.readouterr()

    assert main(["export", str(out), str(dest)]) == 0
    assert capsys.readouterr().out.startswith(f"4 exported to {dest} (4 kept), 1 skipped")
    assert (dest / "cat" / "cat-b.png").stat().st_ino == inode

    # A redone item (lwst replaces a file, never writes into it) and a vanished one.
    redone = out / "images" / "cat-a.png"
    save_image(tmp_path / "new.png", (36, 48), seed=42).replace(redone)
    (out / "images" / "dog-c.png").unlink()
    assert main(["export", str(out), str(dest)]) == 0
    assert capsys.readouterr().out == (
        f"3 exported to {dest} (1 hard-linked, 2 kept), 2 skipped (1 failed, 1 no image), "
        f"2 classes ({UNLABELLED} holds the items without a label), 1 stale file(s) removed\n")
    assert os.path.samefile(dest / "cat" / "cat-a.png", redone)
    assert _files(dest) == (EXPORTED - {"dog/dog-c.png"}) | {"cat/notes.txt", "cat/extra.png"}


def test_copies_and_symlinks_on_request(run_out: Path, tmp_path: Path, main, capsys):
    dest = tmp_path / "by-class"
    assert main(["export", str(run_out), str(dest), "--link", "symlink"]) == 0
    assert "(4 symlinked)" in capsys.readouterr().out
    for key in EXPORTED:
        assert os.readlink(dest / key) == str(_source(run_out, key).resolve())
    assert main(["export", str(run_out), str(dest), "--link", "copy"]) == 0
    assert "(4 copied)" in capsys.readouterr().out  # a symlink is no copy: replaced
    for key in EXPORTED:
        path = dest / key
        assert not path.is_symlink() and not os.path.samefile(path, _source(run_out, key))
        assert path.read_bytes() == _source(run_out, key).read_bytes()
    assert main(["export", str(run_out), str(dest)]) == 0  # identical copies: kept
    assert "(4 kept)" in capsys.readouterr().out


def test_another_filesystem_gets_copies_and_a_note(run_out: Path, main, capsys):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(run_out).st_dev:
        pytest.skip("no second local filesystem (/dev/shm) here")
    dest = shm / f"lwst-export-test-{os.getpid()}"
    try:
        assert main(["export", str(run_out), str(dest)]) == 0
        captured = capsys.readouterr()
        assert "(4 copied)" in captured.out
        assert captured.err.startswith("lwst export: note: cannot hard-link into")
        assert captured.err.count("\n") == 1
        assert _files(dest) == EXPORTED
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_bad_input_is_one_line_and_exit_2(run_out: Path, tmp_path: Path, main, capsys):
    dest = tmp_path / "by-class"
    assert main(["export", str(tmp_path / "nowhere"), str(dest)]) == 2
    assert "no run metadata" in capsys.readouterr().err
    assert main(["export", str(run_out), str(run_out / "images" / "by-class")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lwst export: error: DEST ") and "images/ folder" in err
    assert err.count("\n") == 1

    # A label that cannot be a folder (a hand-written manifest's), as lwst's own writer records
    # it: refused before anything is written.
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    rows = pq.read_table(out / "metadata" / "run-r1.parquet").to_pylist()
    record = next(r for r in rows if r["id"] == "cat-a")
    record.update(run_id="r2", created_at=empty_record("cat-a")["created_at"], label="../up")
    dataset.write_run_metadata(str(out), "r2", [record])
    assert main(["export", str(out), str(dest)]) == 2
    assert capsys.readouterr().err == ("lwst export: error: item 'cat-a': label '../up' cannot "
                                       "be a class folder name (no '/', '\\', '.', '..', at "
                                       "most 255 bytes); fix it in the manifest and re-run\n")
    assert not dest.exists()


def test_the_dataset_is_imagefolder_over_the_export(run_out: Path, tmp_path: Path, main):
    from torchvision.datasets import ImageFolder

    from lwst.stylized_dataset import StylizedImages

    images = StylizedImages(run_out)
    assert images.classes == CLASSES
    assert images.class_to_idx == {name: i for i, name in enumerate(CLASSES)}
    assert len(images) == 4 and images.left_out == {"failed": 1}
    assert images.ids == ["plain", "cat-a", "cat-b", "dog-c"]
    dest = tmp_path / "by-class"
    assert main(["export", str(run_out), str(dest)]) == 0
    folder = ImageFolder(str(dest))
    assert folder.classes == images.classes
    assert [(Path(p).name, i) for p, i in folder.samples] == [
        (Path(p).name, i) for p, i in images.samples]
    assert images.targets == folder.targets

    image, target = images[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and target == 1
    with Image.open(run_out / "images" / "cat-a.png") as written:
        assert image.size == written.size and image.tobytes() == written.convert("RGB").tobytes()
    named = StylizedImages(run_out, transform=lambda im: im.size,
                           target_transform=lambda t: CLASSES[t])
    assert named[3] == (image.size, "dog")
    with pytest.raises(InputError, match="'failed': only ok and skipped items have an image"):
        StylizedImages(run_out, status="failed")


_DATALOADER_SCRIPT = """
import json, pickle, sys
import numpy as np, torch
from torch.utils.data import DataLoader
from lwst.stylized_dataset import StylizedImages

def transform(image):  # torchvision's import alone costs seconds: the same by hand
    return torch.from_numpy(np.asarray(image.resize((16, 16)))).permute(2, 0, 1)

def check(out):
    images = StylizedImages(out, transform=transform)
    again = pickle.loads(pickle.dumps(images))  # what a spawn worker gets
    batches = list(DataLoader(images, batch_size=2, num_workers=2))
    return {"shapes": [list(b[0].shape) for b in batches],
            "targets": torch.cat([b[1] for b in batches]).tolist(),
            "expected": images.targets, "pickled": again.samples == images.samples,
            "same": torch.equal(batches[0][0][1], transform(images.loader(
                images.samples[1][0])))}

print(json.dumps([check(out) for out in sys.argv[1:]]))
"""


def test_the_dataset_in_dataloader_workers(run_out: Path, s3_bucket):
    """Two forked workers, on the local output and a copy on S3, in a fresh interpreter as a
    training script has (after a Prefect flow ran in a process, any forked child of it exits 1:
    tests/test_feedforward.py)."""
    import s3fs

    bucket, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(run_out) + "/", f"{bucket}/out/", recursive=True)
    done = subprocess.run([sys.executable, "-c", _DATALOADER_SCRIPT, str(run_out),
                           f"s3://{bucket}/out"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "AWS_ENDPOINT_URL": options["endpoint_url"]})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == 2 * [{
        "shapes": [[2, 3, 16, 16], [2, 3, 16, 16]], "targets": [0, 1, 1, 2],
        "expected": [0, 1, 1, 2], "pickled": True, "same": True}]


def test_s3_output_export_and_dataset(run_out: Path, tmp_path: Path, s3_bucket, main,
                                      capsys, monkeypatch):
    import s3fs

    from lwst.stylized_dataset import StylizedImages

    bucket, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(run_out) + "/", f"{bucket}/out/", recursive=True)
    out = f"s3://{bucket}/out"
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    dest = tmp_path / "by-class"
    assert main(["export", out, str(dest)]) == 0
    assert "4 exported to" in capsys.readouterr().out
    assert _files(dest) == EXPORTED
    for key in EXPORTED:
        assert (dest / key).read_bytes() == _source(run_out, key).read_bytes()

    assert main(["export", str(run_out), f"s3://{bucket}/by-class"]) == 0
    assert "(4 copied)" in capsys.readouterr().out
    assert main(["export", str(run_out), f"s3://{bucket}/by-class"]) == 0
    assert "(4 kept)" in capsys.readouterr().out
    listed = s3fs.S3FileSystem(**options).find(f"{bucket}/by-class")
    assert {key.split("/by-class/", 1)[1] for key in listed} == EXPORTED
    assert main(["export", out, str(dest), "--link", "hardlink"]) == 2
    assert "needs OUT and DEST on local filesystems" in capsys.readouterr().err

    images = StylizedImages(out)
    assert images.classes == CLASSES and len(images) == 4
    assert images.samples[0] == (f"{out}/images/plain.png", 0)
    image, _ = images[0]
    with Image.open(run_out / "images" / "plain.png") as written:
        assert image.tobytes() == written.convert("RGB").tobytes()
