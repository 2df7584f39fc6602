"""`lwst.stylize_images`: many items from memory in batched passes, each result the one
`lwst.stylize.stylize` gives for that item alone (seeded per item, the caller's generators
untouched), its images checked as `stylize` checks them, a refusal naming the element."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lwst.config import StylizeConfig, with_overrides
from lwst.image_io import ImageInputError, read_image
from lwst.stylize import stylize
from lwst.stylize_batch import stylize_images

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PAIRS = [("cat.jpg", "cat_bigeyes_drawing.jpg"), ("face.jpg", "face_long_painting.jpg"),
         ("sailboat.jpg", "sailboats_drawing.jpg")]


@pytest.fixture(scope="module")
def images() -> dict[str, list[torch.Tensor]]:
    """Real photos at 80 px: three contents of three shapes (80x53, 71x80, 80x53 after the
    sailboat is cropped square below), their geometry exemplars, two textures."""
    contents = [read_image(EXAMPLES / c, 80) for c, _ in PAIRS]
    contents[2] = contents[2][..., :64, :64]  # a third shape: 64x64
    return {"contents": contents,
            "geometries": [read_image(EXAMPLES / g, 80) for _, g in PAIRS],
            "textures": [read_image(EXAMPLES / t, 80)
                         for t in ("texture_mosaic.jpg", "texture_strokes.jpg")]}


def _config(**flat: object) -> StylizeConfig:
    """adain at 80 px with float32 passes (bfloat16, where native, moves pixels more between a
    batch and a single: README, "An item of a stylize-batch chunk can differ slightly");
    one network view to keep the warp cheap."""
    return with_overrides(StylizeConfig(), {"size": 80, "renderer": "adain",
                                            "warp_method": "learned", "warp_views": 1,
                                            "render_precision": "float32", **flat})


def _close(batch: torch.Tensor, single: torch.Tensor) -> None:
    """Equal up to the float rounding of batched passes: measured at most 0.009 (one pixel
    next to a hole the warp opens) and 0.06/255 on average at 96 px."""
    assert batch.shape == single.shape
    diff = (batch - single).abs()
    assert float(diff.mean()) < 0.5 / 255, float(diff.mean()) * 255
    assert float(diff.max()) < 0.05, float(diff.max())


def test_a_batch_gives_each_item_what_stylize_gives_it(images):
    """adain with the learned warp; mixed sizes (three shapes: three render passes), one item
    without a geometry (None in the list), a texture per item."""
    config = _config()
    contents = images["contents"]
    geometries = [images["geometries"][0], None, images["geometries"][2]]
    textures = [images["textures"][i % 2] for i in range(3)]
    results = stylize_images(contents, geometries, textures, config)
    assert len(results) == 3
    for i, result in enumerate(results):
        single = stylize(contents[i], geometries[i], textures[i], config)
        _close(result.image, single.image)
        _close(result.base, single.base)
        assert result.render is not None
        assert result.render.style_loss == pytest.approx(single.render.style_loss, rel=1e-3)
        if geometries[i] is None:
            assert result.warp is None and single.warp is None
            continue
        assert result.warp.estimate.applied == single.warp.estimate.applied
        assert float((result.warp.flow - single.warp.flow).abs().max()) < 0.05
    # each item painted with its own texture: the other texture gives another image
    other = stylize(contents[0], geometries[0], textures[1], config).image
    assert float((results[0].image - other).abs().mean()) > 5 / 255


@pytest.mark.slow  # ~15 s: two more learned-warp + adain items, a regression guard
def test_batches_of_one_repeat_stylize_exactly(images):
    """A batch of one runs the single item's passes: the learned warp and adain, bit for bit;
    two items in batches of one."""
    config = _config()
    contents, geometries = images["contents"][:2], images["geometries"][:2]
    texture = images["textures"][0]
    ones = stylize_images(contents, geometries, texture, config, batch_size=1)
    for one, content, geometry in zip(ones, contents, geometries, strict=True):
        single = stylize(content, geometry, texture, config)
        assert torch.equal(one.warp.flow, single.warp.flow)
        assert torch.equal(one.image, single.image)


def test_each_item_of_a_batch_is_seeded_as_alone(images):
    """gatys from seeded noise renders item by item inside one render pass: each item starts
    from the noise `stylize` draws for it alone, so the images are equal bit for bit (a batch
    that drew all its noise from one generator would give the second item other noise)."""
    config = _config(renderer="gatys", iterations="2", levels=1, warp_method="none", seed=3)
    config = dataclasses.replace(config, render=dataclasses.replace(config.render, init="noise"))
    content = images["contents"][0]
    contents = [content, content.flip(-1)]  # one shape: one render_batch call
    texture = images["textures"][1]
    results = stylize_images(contents, None, texture, config)
    for result, c in zip(results, contents, strict=True):
        assert torch.equal(result.image, stylize(c, None, texture, config).image)
    reseeded = stylize(contents[1], None, texture, dataclasses.replace(config, seed=4)).image
    assert not torch.equal(results[1].image, reseeded)


def test_without_a_warp_or_a_texture(images):
    """No geometry: the texture painted on the content; no texture: warp only; neither: the
    content resized; warp method none: no warp whatever the geometries."""
    config = _config()
    contents, geometries = images["contents"][:2], images["geometries"][:2]
    texture = images["textures"][1]
    for result, content in zip(stylize_images(contents, None, texture, config), contents,
                               strict=True):
        assert result.warp is None and result.render is not None
        _close(result.image, stylize(content, None, texture, config).image)
    warped = stylize_images(contents, geometries, None, config)
    for result, content, geometry in zip(warped, contents, geometries, strict=True):
        single = stylize(content, geometry, None, config)
        assert result.render is None and torch.equal(result.image, result.warp.warped)
        _close(result.image, single.image)
    bare = stylize_images(contents, None, None, with_overrides(config, {"size": 48}))
    for result, content in zip(bare, contents, strict=True):
        assert result.warp is None and result.render is None
        assert torch.equal(result.image, stylize(content, None, None,
                                                 with_overrides(config, {"size": 48})).image)
    unwarped = stylize_images(contents, geometries, texture,
                              with_overrides(config, {"warp_method": "none"}))
    assert all(r.warp is None for r in unwarped)


def test_a_batch_tensor_uint8_and_pil_elements_and_none_in_a_list(images):
    """A (B, 3, H, W) tensor is B contents; a list takes what `stylize` takes (uint8, PIL);
    None in the textures list leaves that item unrendered."""
    config = _config(warp_method="none")
    content = images["contents"][0]
    batch = torch.cat([content, content.flip(-1)])
    texture = images["textures"][0]
    from_tensor = stylize_images(batch, None, texture, config)
    from_list = stylize_images([content, content.flip(-1)[0]], None, texture, config)
    for a, b in zip(from_tensor, from_list, strict=True):
        assert torch.equal(a.image, b.image)
    as_uint8 = (content * 255).round().to(torch.uint8)
    pil = Image.fromarray(as_uint8[0].permute(1, 2, 0).numpy())
    mixed = stylize_images([as_uint8, pil], None, [texture, None], config)
    assert mixed[0].render is not None and mixed[1].render is None
    assert torch.equal(mixed[0].image, stylize(as_uint8, None, texture, config).image)
    assert torch.equal(mixed[1].image, stylize(pil, None, None, config).image)
    assert stylize_images([], None, None, config) == []


@pytest.mark.parametrize("case", ["nan content", "0..255 texture", "channels-last geometry",
                                  "small texture", "shared batch", "lengths", "one image",
                                  "tiny content"])
def test_a_bad_input_is_refused_naming_it(images, case):
    """Checked as `stylize` checks each image (`lwst.image_io.as_image`, the size rules),
    before any work, one `ImageInputError` naming the element."""
    config = _config()
    contents = list(images["contents"])
    geometries = list(images["geometries"])
    textures: object = images["textures"][0]
    expected = {
        "nan content": r"^contents\[2\] has NaN or infinite values$",
        "0..255 texture": r"^textures\[1\] must be a .* got float values in \[0\.\d+, 25\d",
        "channels-last geometry": r"^geometries\[0\] must be .*channels last\?",
        "small texture": r"^item 0: the texture exemplar is 10x10: texture rendering needs",
        "shared batch": r"^textures has 2 images for 3 contents",
        "lengths": r"^geometries has 2 images for 3 contents",
        "one image": r"^contents must be a list of images or a \(B, 3, H, W\) tensor, got a "
                     r"tensor of shape \(3, 53, 80\) \(one item: lwst.stylize_image\)$",
        "tiny content": r"^item 1: the content at size 80 is 80x4",
    }[case]
    if case == "nan content":
        contents[2] = contents[2] * float("nan")
    elif case == "0..255 texture":
        textures = [textures, textures * 255, textures]
    elif case == "channels-last geometry":
        geometries[0] = geometries[0][0].permute(1, 2, 0)
    elif case == "small texture":
        textures = torch.rand(1, 3, 10, 10)
    elif case == "shared batch":
        textures = torch.cat(images["textures"])
    elif case == "lengths":
        geometries = geometries[:2]
    elif case == "one image":
        contents = contents[0][0]
    elif case == "tiny content":
        contents[1] = torch.rand(1, 3, 4, 80)
    with pytest.raises(ImageInputError, match=expected):
        stylize_images(contents, geometries, textures, config)


def test_bad_arguments_are_refused():
    from lwst.errors import InputError

    image = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        stylize_images([image], None, None, _config(), batch_size=0)
    with pytest.raises(InputError, match="config must be a lwst.config.StylizeConfig"):
        stylize_images([image], None, None, {"size": 32})


def test_the_callers_generator_is_left_alone(images):
    """As `stylize`: seeded on a fork, so a training loop's draws after the call are the ones
    it would have made without it."""
    config = _config(warp_method="none")
    torch.manual_seed(1234)
    expected = torch.randperm(64)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    stylize_images(images["contents"][:2], None, images["textures"][0], config)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.randperm(64), expected)


def test_exported_from_the_package_without_importing_torch():
    code = ("import json, sys, lwst\n"
            "light = 'torch' not in sys.modules\n"
            "listed = 'stylize_images' in dir(lwst)\n"
            "import lwst.stylize_batch\n"
            "print(json.dumps({'light': light, 'listed': listed,\n"
            "  'same': lwst.stylize_images is lwst.stylize_batch.stylize_images}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"light": True, "listed": True,
                                                               "same": True}
