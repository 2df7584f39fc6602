"""lwst: geometric and texture neural style transfer (Learning to Warp for Style Transfer).

The Python API can be reached from the package, each name loaded on first use (PEP 562), so
``import lwst`` itself stays free of torch and pandas:

- ``lwst.stylize_image``: `lwst.stylize.stylize` (images in, `StylizeResult` out);
  ``lwst.stylize_images``: `lwst.stylize_batch.stylize_images`, the same for many items, the
  batchable passes batched (lists or a ``(B, 3, H, W)`` tensor in, a list of results out);
  ``lwst.StylizeResult``, ``lwst.stylize_files`` (an `lwst.item.Item` in, its files written);
- ``lwst.StylizeConfig``, ``lwst.WarpConfig``, ``lwst.RenderConfig``, ``lwst.with_overrides``
  (the CLI's flat option names), ``lwst.ConfigError``;
- ``lwst.read_image``, ``lwst.write_png``, ``lwst.ImageInputError``;
- ``lwst.RandomStylize``: a torchvision-style augmentation transform;
- ``lwst.read_metadata_frame``: `lwst.dataset.read_metadata_frame`, every run's metadata rows
  of an output folder as a pandas DataFrame (``latest=True``: each item's latest outcome);
  ``lwst.read_metadata``: the same as one Arrow table;
- ``lwst.StylizedImages``: `lwst.stylized_dataset.StylizedImages`, an output folder's ``ok``
  images with their classes as a torch Dataset (torchvision's ImageFolder, without exporting);
- ``lwst.InputError``: the base class of every refusal (a ``ValueError``).

``lwst.<name>`` is the object named above; any other ``lwst.<name>`` is the submodule of that
name. In particular ``lwst.stylize`` is the *module* (``import lwst.stylize``,
``from lwst.stylize import stylize``): the function is exported as ``stylize_image``, since
Python binds a package attribute to its submodule as soon as the submodule is imported (which
lwst does internally), so a package-level ``stylize`` function would turn into the module
depending on what had been imported before.
"""

import importlib as _importlib

__version__ = "0.1.0"

# Package-level name -> (module, attribute) it is loaded from on first use.
_EXPORTS: dict[str, tuple[str, str]] = {
    "stylize_image": ("lwst.stylize", "stylize"),
    "stylize_images": ("lwst.stylize_batch", "stylize_images"),
    "stylize_files": ("lwst.stylize", "stylize_files"),
    "StylizeResult": ("lwst.stylize", "StylizeResult"),
    "StylizeConfig": ("lwst.config", "StylizeConfig"),
    "WarpConfig": ("lwst.config", "WarpConfig"),
    "RenderConfig": ("lwst.config", "RenderConfig"),
    "with_overrides": ("lwst.config", "with_overrides"),
    "ConfigError": ("lwst.config", "ConfigError"),
    "read_image": ("lwst.image_io", "read_image"),
    "write_png": ("lwst.image_io", "write_png"),
    "ImageInputError": ("lwst.image_io", "ImageInputError"),
    "RandomStylize": ("lwst.transforms", "RandomStylize"),
    "read_metadata": ("lwst.dataset", "read_metadata"),
    "read_metadata_frame": ("lwst.dataset", "read_metadata_frame"),
    "StylizedImages": ("lwst.stylized_dataset", "StylizedImages"),
    "InputError": ("lwst.errors", "InputError"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> object:
    """Load an exported name on first use. Any other name raises AttributeError, which is
    what lets ``from lwst import <submodule>`` fall back to importing the submodule."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'lwst' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
