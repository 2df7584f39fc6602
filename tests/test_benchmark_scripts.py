"""The benchmark scripts' result files name the model they measured, and a measuring run of
real_pairs.py writes nothing into the repository (audit D9, D10).

The scripts' own helpers are called directly (parsing, the estimators' notes, the JSON and
table writers): the measurements themselves take minutes and are not run here. The committed
result files must still load with the code that reads them (new keys only, none renamed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_renderers  # noqa: E402 - benchmarks/ is not a package
import bench_warp  # noqa: E402
import confidence_ranking  # noqa: E402
import real_pairs  # noqa: E402

from lwst.config import WarpConfig  # noqa: E402
from lwst.renderers import decoder_ids  # noqa: E402
from lwst.warpnet.inference import checkpoint_id, default_checkpoint  # noqa: E402


def _row(name: str, before: float, after: float) -> dict:
    """One real_pairs.py row with the fields its table reads."""
    return dict(name=name, before=before, after=after, mean_px=3.0, mean_frac=0.01, fold=0.0,
                stretch=0.0, raw_fold=0.01, confidence=0.4, applied="full", cos_before=0.2,
                cos_after=0.3, ambiguity=0.1, cos_ceiling=0.9, area_spread=0.1, refined=False,
                seconds=1.0)


def test_real_pairs_out_defaults_to_none_and_keeps_docs_pairs() -> None:
    assert real_pairs.parse_args([]).out is None
    assert real_pairs.parse_args(["--out", "docs/pairs"]).out == Path("docs/pairs")


def test_real_pairs_without_out_prints_the_table_and_writes_only_the_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [_row("a", 0.2, 0.3), _row("b", 0.4, 0.35)]
    config = WarpConfig()
    lines = real_pairs.table(rows, "warpnet-0123456789ab", "torchvision", config)
    table_md = ROOT / "docs" / "pairs" / "table.md"
    before = table_md.read_bytes() if table_md.exists() else None
    raw = tmp_path / "rp.json"
    real_pairs.write_results(rows, lines, config, "warpnet-0123456789ab", None, raw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rp.json"]
    assert (table_md.read_bytes() if table_md.exists() else None) == before
    assert "Better aligned than unwarped on 1/2 pairs, worse on 1" in capsys.readouterr().out
    saved = json.loads(raw.read_text())
    assert saved["warpnet_id"] == "warpnet-0123456789ab"
    assert saved["rows"] == rows and saved["config"]["views"] == config.views
    assert confidence_ranking.load(raw)[0]["raw_fold"] == 0.01  # its reader still reads it


def test_real_pairs_with_out_writes_the_table_there(tmp_path: Path) -> None:
    rows = [_row("a", 0.2, 0.3)]
    lines = real_pairs.table(rows, "warpnet-0123456789ab", "torchvision", WarpConfig())
    real_pairs.write_results(rows, lines, WarpConfig(), "warpnet-0123456789ab", tmp_path, None)
    assert (tmp_path / "table.md").read_text() == "\n".join(lines) + "\n"
    assert "`warpnet-0123456789ab`" in lines[0]


def test_bench_warp_learned_rows_note_the_network_id() -> None:
    from lwst.vgg import load_vgg19

    vgg = load_vgg19("random")  # the id is the checkpoint's, whatever the features
    chosen, notes = bench_warp.estimators(vgg, WarpConfig(), ["identity", "learned"], None,
                                          views=2)
    assert set(chosen) == {"identity", "learned"}
    assert notes == {"learned": checkpoint_id(default_checkpoint())}


def test_bench_warp_json_names_the_model_beside_machine(tmp_path: Path) -> None:
    path = tmp_path / "bw.json"
    args = bench_warp.parse_args(["--warp-views", "2", "--checkpoint", "net.pt", "--json",
                                  str(path)])
    setup = {"pairs": 1, "tiers": ["geometry"], "seed": 0, "files": ["x.jpg"]}
    results = {"epe": {"learned": {"geometry": [1.5]}}, "seconds": {"learned": [0.2]},
               "setup": dict(setup)}
    bench_warp.write_json(args, results, [], "warpnet-0123456789ab")
    saved = json.loads(path.read_text())
    assert saved["models"] == {"learned": "warpnet-0123456789ab", "views": 2,
                               "checkpoint": "net.pt"}
    assert saved["results"]["setup"] == setup and "machine" in saved
    # a later run on the same pairs still merges this file's rows
    merged = bench_warp.merge_baseline({"epe": {}, "seconds": {}, "setup": dict(setup)}, path)
    assert merged["epe"]["learned"] == {"geometry": [1.5]}


@pytest.mark.parametrize("path", sorted(RESULTS.glob("bench_warp_*.json")), ids=lambda p: p.name)
def test_committed_bench_warp_files_still_merge(path: Path) -> None:
    earlier = json.loads(path.read_text())["results"]
    if "setup" not in earlier:
        pytest.skip("no EPE rows (cost only)")
    merged = bench_warp.merge_baseline({"epe": {}, "seconds": {}, "setup": earlier["setup"]},
                                       path)
    assert set(merged["epe"]) == set(earlier["epe"])


@pytest.mark.parametrize("path", sorted(RESULTS.glob("real_pairs_*.json")), ids=lambda p: p.name)
def test_committed_real_pairs_files_still_load(path: Path) -> None:
    rows = confidence_ranking.load(path)
    assert rows and all("before" in r and "after" in r for r in rows)


def test_bench_renderers_quality_rows_name_their_decoders() -> None:
    assert bench_renderers.renderer_decoder_ids("gatys") == {}
    wct = bench_renderers.renderer_decoder_ids("wct")
    assert list(wct) == ["relu4_1", "relu3_1", "relu2_1", "relu1_1"]  # the default cascade
    assert ",".join(wct.values()) == decoder_ids("wct", "cpu")
    assert bench_renderers.renderer_decoder_ids("adain") == {
        "relu4_1": decoder_ids("adain", "cpu")}


def test_bench_soak_samples_a_process_tree_and_summarises_it(tmp_path: Path) -> None:
    """bench_soak.py's sampler reads the RSS of a real child process tree from /proc (a
    grandchild holding ~60 MiB is seen as ``other``, apart from the main process), and its
    summary reads a known slope off the second half of the items."""
    import subprocess
    import time

    import bench_soak

    photos = [tmp_path / f"p{k}.jpg" for k in range(3)]
    styles = [tmp_path / f"s{k}.jpg" for k in range(5)]
    manifest = tmp_path / "m.csv"
    bench_soak.build_manifest(manifest, photos, styles, 10)
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    assert len(rows) == 10 and all(row[1] != row[2] for row in rows)
    assert len({row[3] for row in rows}) == 5  # every texture used

    child = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
             "'import time; b = bytearray(60 << 20); b[::4096] = b\"x\" * len(b[::4096]); "
             "time.sleep(30)']); time.sleep(30)")
    process = subprocess.Popen([sys.executable, "-c", child])
    try:
        sampler = bench_soak.Sampler(process.pid, lambda: 0, every=0.2)
        time.sleep(2.0)
        sampler.stop()
    finally:
        for pid in bench_soak.descendants(process.pid):
            subprocess.run(["kill", str(pid)], check=False)
        process.kill()
        process.wait()
    last = sampler.samples[-1]
    assert last.other > 55 and last.main < 55 and last.worker == 0 and last.server == 0

    samples = [bench_soak.Sample(float(k), done, 100.0 + 0.3 * done, 0.0, 0.0, 50.0, 0.0)
               for k, done in enumerate(range(0, 201, 10))]
    summary = bench_soak.summarise(samples, 200, "main")
    assert summary["slope_2nd_half_mib_per_100_items"] == 30.0
    assert summary["at_10pct_mib"] == 106.0 and summary["peak_mib"] == 160.0


def test_bench_soak_counts_images_under_an_s3_prefix(s3_bucket, tmp_path: Path) -> None:
    """bench_soak.py's progress on S3: the images under ``<out>/images`` on a real moto server,
    hidden names left out; the temporary objects lwst would leave are found anywhere below
    ``out``; and the server's options are what reading its metadata takes."""
    import bench_soak
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    out = bench_soak.Output(f"s3://{bucket}/out", fs)
    assert out.count() == 0 and out.leftovers() == []  # nothing written yet: no error
    fs.pipe_file(f"{bucket}/out/images/soak000001.png", b"x")
    fs.pipe_file(f"{bucket}/out/images/soak000002.jpg", b"x")
    fs.pipe_file(f"{bucket}/out/images/.lwst-partial", b"x")
    fs.pipe_file(f"{bucket}/out/warped/.lwst-partial2", b"x")
    assert out.count() == 2 and sorted(out.image_ids()) == ["soak000001", "soak000002"]
    assert sorted(p.rsplit("/", 1)[-1] for p in out.leftovers()) == [".lwst-partial",
                                                                      ".lwst-partial2"]
    assert out.storage_options()["endpoint_url"] == options["endpoint_url"]

    local = bench_soak.Output(str(tmp_path / "out"))
    assert local.count() == 0
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "out" / "images" / ".lwst-x").write_bytes(b"x")
    assert local.image_ids() == ["a"] and len(local.leftovers()) == 1
