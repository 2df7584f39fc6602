"""lwst from Python (a notebook, a training script): the library audit's findings 1, 3, 5, 7,
10, 11 and 12. `stylize` leaves the caller's random generators alone, works under
``torch.no_grad()`` / ``torch.inference_mode()`` and returns a result that prints briefly;
`write_png` refuses what it would write wrongly; ``import lwst`` exports the API without
importing torch; the tensor API imports no pandas."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwst.config import StylizeConfig, with_overrides
from lwst.errors import InputError
from lwst.image_io import ImageInputError, encode_image, read_image, write_png
from lwst.stylize import StylizeResult, encode_item, stylize

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """Real photos at 32 px: content, geometry exemplar, texture exemplar."""
    return {role: read_image(EXAMPLES / name, 32) for role, name in
            (("content", "cat.jpg"), ("geometry", "cat_bigeyes_drawing.jpg"),
             ("texture", "texture_mosaic.jpg"))}


def _config(**flat: object) -> StylizeConfig:
    return with_overrides(StylizeConfig(), {"size": 32, **flat})


# --- finding 1: the caller's random generators -------------------------------------------

def test_stylize_does_not_reseed_the_callers_global_generator(images):
    """A training loop's draws after a call are the ones it would have made without it (the
    old code seeded the global generator with ``config.seed`` on every call)."""
    config = _config(renderer="adain", warp_method="none")
    torch.manual_seed(1234)
    expected = torch.randperm(64)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    stylize(images["content"], None, images["texture"], config)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.randperm(64), expected)


def test_the_same_seed_still_gives_the_same_image(images):
    """Repeatable with the generators forked: gatys from seeded noise, twice, with the global
    generator in a different state each time."""
    config = _config(renderer="gatys", warp_method="none", iterations="2", levels=1, seed=7)
    config = dataclasses.replace(config, render=dataclasses.replace(config.render, init="noise"))
    torch.manual_seed(1)
    first = stylize(images["content"], None, images["texture"], config).image
    torch.manual_seed(2)
    torch.rand(10)
    second = stylize(images["content"], None, images["texture"], config).image
    assert torch.equal(first, second)
    other = stylize(images["content"], None, images["texture"],
                    dataclasses.replace(config, seed=8)).image
    assert not torch.equal(first, other)


# --- finding 3: write_png / encode_image --------------------------------------------------

def test_write_png_takes_what_stylize_takes(images, tmp_path):
    """A uint8 tensor, a (3, H, W) float and a PIL image are written as the picture they are
    (uint8 came out white)."""
    x = images["content"]
    as_uint8 = (x * 255).round().to(torch.uint8)
    for name, image in {"u8": as_uint8, "chw": x[0],
                        "pil": Image.fromarray(as_uint8[0].permute(1, 2, 0).numpy())}.items():
        write_png(image, tmp_path / f"{name}.png")
        back = read_image(tmp_path / f"{name}.png")
        assert (back - x).abs().max() <= 1 / 255 + 1e-6, name


@pytest.mark.parametrize("case", ["0..255 floats", "batch", "nan", "grey", "rgba", "empty",
                                  "numpy", "int64"])
def test_write_png_refuses_an_image_it_would_write_wrongly(images, tmp_path, case):
    x = images["content"]
    bad = {"0..255 floats": x * 255, "batch": torch.cat([x, 1 - x]),
           "nan": x * float("nan"), "grey": x[0, :1], "rgba": torch.cat([x, x[:, :1]], 1),
           "empty": torch.empty(1, 3, 0, 0), "numpy": x[0].permute(1, 2, 0).numpy(),
           "int64": (x * 255).long()}[case]
    target = tmp_path / "out.png"
    with pytest.raises(ImageInputError) as info:
        write_png(bad, target)
    message = str(info.value)
    assert message.startswith("image ") and "\n" not in message, message
    assert isinstance(info.value, InputError)
    assert not target.exists()
    if case == "batch":
        assert "a batch of 2: write one image at a time" in message


def test_an_unwritable_result_is_a_bug_not_bad_input(images):
    """lwst's own output with NaN fails the item as a bug (RuntimeError), not as the user's
    input (it was written black before)."""
    result = StylizeResult(image=images["content"] * float("nan"), warp=None, render=None,
                           base=images["content"])
    with pytest.raises(RuntimeError, match="lwst produced an image it cannot write: image has"):
        encode_item(result, {"image": "out.png"})
    assert encode_image(images["content"])[:8] == b"\x89PNG\r\n\x1a\n"


# --- finding 5: under torch.no_grad() / torch.inference_mode() ----------------------------

GRAD_CASES = {
    "gatys lbfgs": {"renderer": "gatys", "warp_method": "none", "optimizer": "lbfgs"},
    "gatys adam": {"renderer": "gatys", "warp_method": "none", "optimizer": "adam"},
    "optim warp": {"renderer": "adain", "warp_method": "optim", "optim_steps": 2},
}


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_stylize_runs_under_no_grad_and_inference_mode(images, case, context):
    config = _config(iterations="2", levels=1, **GRAD_CASES[case])
    geometry = images["geometry"] if config.warp.method != "none" else None
    with context():
        result = stylize(images["content"], geometry, images["texture"], config)
    assert result.image.shape == (1, 3, 21, 32)
    assert bool(torch.isfinite(result.image).all())
    if config.warp.method == "optim":
        assert result.warp is not None and result.warp.estimate.seconds > 0


def test_gatys_renders_with_a_vgg_built_under_inference_mode(images):
    """A VGG made inside ``torch.inference_mode()`` (e.g. the first model load of a process
    happened in an eval loop, and the cache kept it) holds inference tensors; the render
    backpropagates through a normal copy instead of failing."""
    from lwst.render import render_texture
    from lwst.vgg import load_vgg19

    with torch.inference_mode():
        vgg = copy.deepcopy(load_vgg19("random"))
    assert next(vgg.parameters()).is_inference()
    config = _config(renderer="gatys", iterations="2", levels=1).render
    result = render_texture(images["content"], images["texture"], config, vgg)
    assert result.image.shape == images["content"].shape
    assert next(vgg.parameters()).is_inference()  # the caller's model is left as it was
    assert repr(result).startswith("RenderResult(image=float32[1, 3, 21, 32] cpu, "
                                   "history=1 levels, content_loss=")


# --- finding 7: the package's exports -----------------------------------------------------

def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_lwst_exports_the_api_without_importing_torch():
    found = _fresh(
        "import json, sys, lwst\n"
        "light = 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
        "listed = [n for n in dir(lwst) if not n.startswith('_')]\n"
        "import lwst.stylize\n"
        "from lwst import stylize as from_import\n"
        "print(json.dumps({'light': light, 'listed': listed,\n"
        "  'function': lwst.stylize_image is lwst.stylize.stylize,\n"
        "  'module': type(lwst.stylize).__name__, 'from': type(from_import).__name__,\n"
        "  'names': {n: getattr(lwst, n).__module__ for n in lwst.__all__ if n[0] != '_'}}))")
    assert found["light"]
    assert found["function"]
    # ``lwst.stylize`` is the module (what ``import lwst.stylize`` everywhere relies on)
    assert found["module"] == found["from"] == "module"
    assert {"stylize_image", "StylizeConfig", "WarpConfig", "RenderConfig", "with_overrides",
            "read_image", "write_png", "RandomStylize", "read_metadata", "InputError",
            "StylizeResult"} <= set(found["listed"])
    assert found["names"]["RandomStylize"] == "lwst.transforms"
    assert found["names"]["InputError"] == "lwst.errors"


def test_an_unknown_package_attribute_still_raises_attribute_error():
    import lwst

    with pytest.raises(AttributeError, match="no attribute 'stylise'"):
        lwst.stylise  # noqa: B018
    assert lwst.StylizeConfig is StylizeConfig


# --- finding 10: the result -----------------------------------------------------------------

def test_the_result_is_documented_and_prints_briefly(images):
    config = _config(renderer="adain", warp_method="affine")
    as_uint8 = (images["content"] * 255).round().to(torch.uint8)
    result = stylize(as_uint8[0], images["geometry"], images["texture"], config)
    assert result.image.dtype == torch.float32 and result.image.shape == (1, 3, 21, 32)
    assert result.warp is not None and result.render is not None
    text = repr(result)
    assert len(text) < 500 and "tensor(" not in text, text
    assert "float32[1, 3, 21, 32] cpu" in text and "float32[1, 2, 21, 32] cpu" in text
    for field in ("image", "warp", "render", "base"):
        assert f"``{field}``" in StylizeResult.__doc__
    assert "float32" in stylize.__doc__ and "texture`` None: warp only" in stylize.__doc__


# --- finding 11: import cost ---------------------------------------------------------------

def test_the_tensor_api_does_not_import_pandas():
    found = _fresh("import json, sys, lwst.stylize, lwst.transforms\n"
                   "print(json.dumps({'pandas': 'pandas' in sys.modules}))")
    assert found == {"pandas": False}


def test_an_item_still_gives_its_manifest_row():
    from lwst.item import resolve_items
    from lwst.manifest import ManifestItem

    entry = ManifestItem("a", "c.jpg", None, "t.jpg", label="cats")
    (item,), refused = resolve_items([entry], {"size": 32}, "/tmp/out")
    assert refused == [] and item.manifest_item() == entry


# --- finding 12: an empty tensor, a decoder that does not fit -------------------------------

@pytest.mark.parametrize("role", ["content", "texture"])
def test_an_empty_tensor_is_refused_naming_it(images, role):
    given = {"content": images["content"], "texture": images["texture"],
             role: torch.empty(1, 3, 0, 0)}
    with pytest.raises(ImageInputError, match=f"^{role} is empty \\(0x0 px\\)$"):
        stylize(given["content"], None, given["texture"], _config(renderer="adain"))


def test_a_decoder_with_a_wrong_shape_tensor_names_it(tmp_path):
    from lwst.decoders import DecoderCheckpointError, load_decoder, shipped_decoder_path

    payload = torch.load(shipped_decoder_path("adain", 4), weights_only=True)
    payload["state_dict"]["net.1.weight"] = torch.zeros(2, 2)
    bad = tmp_path / "decoder_adain.pt"
    torch.save(payload, bad)
    with pytest.raises(DecoderCheckpointError) as info:
        load_decoder(bad, "adain", 4)
    message = str(info.value)
    assert "net.1.weight has shape (2, 2), expected (128, 512, 3, 3)" in message, message
    assert "\n" not in message
    del payload["state_dict"]["net.1.bias"]
    payload["state_dict"]["net.1.weight"] = torch.zeros(128, 512, 3, 3)
    torch.save(payload, bad)
    with pytest.raises(DecoderCheckpointError, match="missing net.1.bias"):
        load_decoder(bad, "adain", 4)


def test_write_png_output_matches_numpy_encoding(images, tmp_path):
    """The float path is unchanged: the bytes PIL gets are the rounded 0..255 values."""
    x = images["content"]
    write_png(x, tmp_path / "x.png")
    expected = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), expected)


def test_the_batched_item_path_leaves_the_callers_generator_alone_too(tmp_path):
    """`stylize_files_batch` (the pipeline's chunks, public) seeded the global generator as
    `stylize` did."""
    from lwst.item import Item
    from lwst.item_files import item_outputs
    from lwst.stylize_batch import stylize_files_batch

    config = _config(renderer="adain", warp_method="none")
    item = Item("a", str(EXAMPLES / "cat.jpg"), None, str(EXAMPLES / "texture_mosaic.jpg"),
                config, item_outputs(str(tmp_path / "out"), "a"))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    [outcome] = stylize_files_batch([item])
    assert outcome.error is None
    assert torch.equal(torch.get_rng_state(), before)


def test_a_vgg_first_loaded_under_inference_mode_still_serves_gatys_later():
    """The cached VGG must not hold inference tensors whatever context loaded it first (a
    `RandomStylize` in an eval loop): gatys then needs autograd through it. A fresh process,
    so that this load is the first."""
    code = """
import torch
from lwst.image_io import read_image
from lwst.vgg import load_vgg19
from lwst.render import render_texture
from lwst.config import RenderConfig
with torch.inference_mode():
    vgg = load_vgg19("random")
assert not any(p.is_inference() for p in vgg.parameters())
image = read_image("examples/cat.jpg", 32)
result = render_texture(image, image, RenderConfig(levels=1, iterations=(2,)), vgg)
print("ok", tuple(result.image.shape))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok (1, 3, 21, 32)"  # the 32-px cat, 3:2
