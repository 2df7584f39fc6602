"""The kornia operations lwst uses, imported once with kornia's import-time warning silenced.

kornia 0.8 decorates functions with ``torch.jit.script`` when it is imported, and torch 2.14
deprecates that with a FutureWarning, so every ``import lwst.stylize`` printed two lines about
code that is neither lwst's nor its user's. The filter is scoped to the import
(``warnings.catch_warnings``): the user's own warning filters are left as they were.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
    import kornia.enhance as enhance
    import kornia.filters as filters
    from kornia.geometry.transform import build_pyramid, get_tps_transform, warp_points_tps

__all__ = ["build_pyramid", "enhance", "filters", "get_tps_transform", "warp_points_tps"]
