"""The synthetic world with ground truth (DESIGN "The synthetic world").

* :mod:`.scenes`   -- the object families, seeded :class:`SceneParams`, the training stream's scenes,
  the view / light moments
* :mod:`.geometry` -- object-frame meshes and per-vertex albedo
* :mod:`.render`   -- ground-truth rendering (image, depth, normals, mask, albedo), :class:`TrainingStream`
* :mod:`.dataset`  -- the held-out test set on disk and its 16-bit depth PNG codec
* :mod:`.cli`      -- ``gan2shape synthesize`` and ``gan2shape viewlight``
* :mod:`.v2`       -- world v2: canonical depth / albedo maps rendered by the method's own renderer
* :mod:`.consistency` -- model-consistency checks of world v2 and pseudo-sample coverage
"""

from .cli import add_cli
from .dataset import decode_depth_png, encode_depth_png, load_test_set, save_test_set
from .geometry import build_meshes
from .render import FAR_DEPTH, TrainingStream, intrinsics, render_batch, render_dataset
from .scenes import (ALL_FAMILIES, FAMILIES, V2_FAMILIES, WORLDS, SceneParams, sample_params, stream_params,
                     viewlight_moments, world_of)

__all__ = [
    "FAMILIES", "V2_FAMILIES", "ALL_FAMILIES", "WORLDS", "world_of", "FAR_DEPTH", "SceneParams", "sample_params", "stream_params", "viewlight_moments",
    "build_meshes", "intrinsics", "render_batch", "TrainingStream", "render_dataset", "save_test_set",
    "load_test_set", "encode_depth_png", "decode_depth_png", "add_cli",
]
