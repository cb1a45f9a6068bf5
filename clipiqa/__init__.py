"""clipiqa: few-shot blind image quality assessment with CLIP.

The verbs: ``load_model`` (a prompted CLIP), ``score_files`` (batch scoring), ``save_checkpoint`` /
``load_model(..., prompts=CKPT)`` (adapted state). See README.md for the loop.
"""
__version__ = "0.1.0"

from .checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from .model import IQAModel, load_model, resolve_device  # noqa: E402
from .scoring import score_files, score_images  # noqa: E402
from .prompts import SCENE_LABELS, SCENES, PromptConfig  # noqa: E402
from .weights import WeightsUnavailableError, export_backbone  # noqa: E402

__all__ = [
    "__version__", "load_model", "IQAModel", "PromptConfig", "SCENES", "SCENE_LABELS", "resolve_device",
    "score_files", "score_images", "save_checkpoint", "read_checkpoint", "apply_checkpoint", "export_backbone", "WeightsUnavailableError",
]
