"""Command-line and pipeline wording of input refusals (audit of image inputs): `--flow-out`
must name a .flo, a refused setting names its option, and a pipeline item's input failure
names its role (content, geometry, texture) as a storage failure does."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

import lwst.stylize
from lwst.cli import main
from lwst.config import ConfigError, StylizeConfig, with_overrides
from lwst.failures import failure_reason
from lwst.image_io import ImageInputError
from lwst.item import Item
from lwst.item_files import ItemOutputs, item_outputs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CAT, DRAWING = str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "cat_bigeyes_drawing.jpg")
TEXTURE = str(EXAMPLES / "texture_strokes.jpg")


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# ---- 6. --flow-out must be a .flo ----

@pytest.mark.parametrize("name", ["a.flo.png", "a.txt", "flow"])
@pytest.mark.parametrize("command", ["warp", "stylize"])
def test_a_flow_output_not_named_flo_is_refused_before_the_work(tmp_path, capsys, no_work,
                                                                 name, command):
    flow = tmp_path / name
    code = main([command, "--content", CAT, "--geometry", DRAWING, "--out",
                 str(tmp_path / "a.png"), "--flow-out", str(flow), "--size", "32", "--quiet"])
    line = _one_error_line(capsys)
    suffix = Path(name).suffix or "(none)"
    assert code == 2
    assert line == (f"lwst {command}: error: --flow-out {flow}: unsupported flow suffix "
                    f"'{suffix}'; a flow is written as Middlebury .flo (name it *.flo)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_library_refuses_a_flow_output_not_named_flo(tmp_path):
    with pytest.raises(ValueError, match="unsupported flow suffix '.png'"):
        lwst.stylize.stylize_files(Item("a", CAT, DRAWING, None, StylizeConfig(size=32),
                                        ItemOutputs(*(str(tmp_path / name) for name in (
                                            "a.png", "w.png", "f.png", "v.png")))))
    assert not list(tmp_path.iterdir())


# ---- 7. refused settings name the option ----

SETTINGS = [
    (["--warp-strength", "nan"], "--warp-strength must be within 0..4, got nan"),
    (["--min-warp-confidence", "2"], "--min-warp-confidence must be within 0..1, got 2.0"),
    (["--optim-steps", "0"], "--optim-steps must be a finite number >= 1, got 0"),
    (["--seed", "-1"], "--seed must be within 0..9223372036854775807 (63 bits), got -1"),
    (["--size", "0"], "--size 0 is outside the supported range 8..8192"),
    (["--style-strength", "3"], "--style-strength must be within 0..1, got 3.0"),
    (["--levels", "0"], "--levels must be at least 1, got 0"),
    (["--iterations", "x"], "--iterations: expected comma-separated integers"),
]


@pytest.mark.parametrize("args, expected", SETTINGS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_a_refused_setting_names_its_option(tmp_path, capsys, no_work, args, expected):
    code = main(["stylize", "--content", CAT, "--texture", TEXTURE, "--out",
                 str(tmp_path / "o.png"), "--quiet", *args])
    line = _one_error_line(capsys)
    assert code == 2 and line.startswith(f"lwst stylize: error: {expected}"), line


@pytest.mark.parametrize("args, image, option", [
    (["--style-size", "8"], "the texture exemplar is 8x", "--style-size (or --size, its default)"),
    (["--size", "8"], "the content at size 8 is 8x", "--size"),
])
def test_an_image_too_small_to_render_names_the_option_to_raise(tmp_path, capsys, args, image,
                                                                option):
    """Audit defect 12: the remedy said ``raise --size / style_size`` (an internal name)."""
    code = main(["stylize", "--content", CAT, "--texture", TEXTURE, "--out",
                 str(tmp_path / "o.png"), "--quiet", *args])
    line = _one_error_line(capsys)
    assert code == 2 and line.startswith(f"lwst stylize: error: {image}"), line
    assert line.endswith(f"texture rendering needs a shorter side of at least 16 px (raise "
                         f"{option}, or use a less extreme aspect ratio)")
    assert not (tmp_path / "o.png").exists()


def test_lwst_run_names_the_option_too(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,content\na,{CAT}\n")
    code = main(["run", str(manifest), "--out", str(tmp_path / "out"), "--quiet",
                 "--warp-strength", "nan"])
    assert code == 2
    assert _one_error_line(capsys) == ("lwst run: error: --warp-strength must be within 0..4, "
                                       "got nan")


def test_the_library_and_manifests_keep_the_setting_names():
    with pytest.raises(ConfigError) as info:
        with_overrides(StylizeConfig(), {"warp_strength": float("nan")})
    assert str(info.value) == "warp_strength must be within 0..4, got nan"
    assert info.value.setting == "warp_strength"


# ---- 8. a pipeline item's input failure names its role ----

def _truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.open(CAT).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


@pytest.mark.parametrize("role", ["content", "geometry", "texture"])
def test_a_gatys_item_names_the_input_that_failed(tmp_path, role):
    bad = str(_truncated_jpeg(tmp_path / "bad.jpg"))
    inputs = {"content": CAT, "geometry": DRAWING, "texture": TEXTURE, role: bad}
    with pytest.raises(ImageInputError) as info:
        lwst.stylize.stylize_files(Item("a", inputs["content"], inputs["geometry"],
                                        inputs["texture"], StylizeConfig(size=32),
                                        item_outputs(str(tmp_path / "out"), "a")))
    reason = failure_reason(info.value, inputs)
    assert reason.startswith(f"{role} {bad}: corrupt or truncated image ("), reason
    assert not (tmp_path / "out").exists()


def test_a_chunk_item_names_the_input_that_failed(tmp_path):
    from lwst.stylize_batch import stylize_files_batch

    bad = str(_truncated_jpeg(tmp_path / "bad.jpg"))
    config = with_overrides(StylizeConfig(), {"size": 32, "renderer": "adain"})
    items = [Item(name, content, geometry, texture, config,
                  item_outputs(str(tmp_path / "out"), name))
             for name, content, geometry, texture in (("geom", CAT, bad, TEXTURE),
                                                      ("tex", CAT, DRAWING, bad),
                                                      ("both", bad, DRAWING, bad))]
    outcomes = {o.item.id: o for o in stylize_files_batch(items)}
    reasons = {name: failure_reason(o.error, {"content": o.item.content,
                                               "geometry": o.item.geometry,
                                               "texture": o.item.texture})
               for name, o in outcomes.items()}
    assert reasons["geom"].startswith(f"geometry {bad}: corrupt or truncated image (")
    assert reasons["tex"].startswith(f"texture {bad}: corrupt or truncated image (")
    assert reasons["both"].startswith(f"content {bad}: corrupt or truncated image (")


# ---- 11. a chunk of one gives the CLI's pixels (README: the batched difference) ----

def test_a_chunk_of_one_is_the_single_item_bit_for_bit(tmp_path):
    from lwst.stylize_batch import stylize_files_batch

    config = with_overrides(StylizeConfig(), {"size": 32, "renderer": "adain"})
    single, chunk = (item_outputs(str(tmp_path / name), "a") for name in ("single", "chunk"))
    lwst.stylize.stylize_files(Item("a", CAT, DRAWING, TEXTURE, config, single))
    [outcome] = stylize_files_batch([Item("a", CAT, DRAWING, TEXTURE, config, chunk)])
    assert outcome.error is None
    for kind in ("image", "warped", "flow_vis"):
        assert (Image.open(getattr(single, kind)).tobytes()
                == Image.open(getattr(chunk, kind)).tobytes())
