"""A manifest row resolved once into what the pipeline runs: the typed item every task takes.

A `ManifestItem` is what the user wrote (input URIs and flat per-row overrides). An `Item` is
that row joined with the run's options into the one `StylizeConfig` it runs with, plus where its
files go and which stages it needs. The flow builds every `Item` once (`resolve_items`) and
hands the objects to its tasks; nothing downstream rebuilds a configuration from flat dicts, so
a batch runs with each item's own settings and the metadata ``params`` are what was applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lwst.config import StylizeConfig, to_params, with_overrides
from lwst.errors import InputError
from lwst.item_files import ItemOutputs, item_outputs, warps
from lwst.renderers import FEED_FORWARD

if TYPE_CHECKING:  # lwst.manifest imports pandas (0.6 s), which the tensor API never needs
    from lwst.manifest import ManifestItem


@dataclass(frozen=True)
class Item:
    """One item, ready to run. Plain data (dataclasses, strings): it pickles to Dask workers
    and Prefect renders it as JSON."""

    id: str
    content: str
    geometry: str | None
    texture: str | None
    config: StylizeConfig
    outputs: ItemOutputs
    label: str | None = None  # the manifest's ``label``, carried to the metadata row

    @property
    def warps(self) -> bool:
        """Whether the geometric stage runs (a geometry exemplar, a method, a strength)."""
        return warps(self.geometry is not None, self.config)

    @property
    def renders(self) -> bool:
        return self.texture is not None

    @property
    def feed_forward(self) -> bool:
        """Rendered (if at all) by a single-pass renderer, so it batches with its peers."""
        return self.config.render.renderer in FEED_FORWARD

    def params(self) -> dict[str, Any]:
        return to_params(self.config)

    def params_json(self) -> str:
        """The metadata ``params`` column: every setting the item ran with."""
        return json.dumps(self.params())

    def batch_key(self) -> str:
        """Items with one key share every setting, so one batched pass serves them all (their
        sizes may still differ: ``upscale`` off keeps a small content's, `lwst.stylize_batch`
        renders each shape apart)."""
        return json.dumps(self.params(), sort_keys=True, default=str)

    def manifest_item(self) -> ManifestItem:
        from lwst.manifest import ManifestItem  # pandas: only the pipeline gets here

        return ManifestItem(self.id, self.content, self.geometry, self.texture,
                            label=self.label)


@dataclass(frozen=True)
class RefusedItem:
    """A row whose settings cannot run (e.g. the run's and the row's options disagree)."""

    entry: ManifestItem
    reason: str


def resolve_items(entries: list[ManifestItem], overrides: dict[str, Any], out: str,
                  configs: dict[str, StylizeConfig | str] | None = None,
                  ) -> tuple[list[Item], list[RefusedItem]]:
    """Every row's `Item`, joined with the run's ``overrides`` (a row's own columns win).

    Rows with the same overrides share one configuration object (resolving 100 000 rows costs
    milliseconds); a row whose combined settings are refused becomes a `RefusedItem` with the
    one-line reason. Pass the same ``configs`` to calls on successive chunks of one manifest to
    share the configurations between them.
    """
    configs = {} if configs is None else configs
    items: list[Item] = []
    refused: list[RefusedItem] = []
    for entry in entries:
        key = json.dumps(entry.overrides, sort_keys=True, default=str)
        if key not in configs:
            try:
                configs[key] = with_overrides(StylizeConfig(), {**overrides, **entry.overrides})
            except InputError as exc:  # `ConfigError`: a bad value or an unknown option
                configs[key] = str(exc)
        config = configs[key]
        if isinstance(config, str):
            refused.append(RefusedItem(entry, config))
            continue
        items.append(Item(entry.id, entry.content, entry.geometry, entry.texture, config,
                          item_outputs(out, entry.id, config.image_format), entry.label))
    return items, refused
