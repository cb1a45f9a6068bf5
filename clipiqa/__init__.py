"""clipiqa: few-shot blind image quality assessment with CLIP.

The verbs, in the order of the notebook loop::

    model = clipiqa.load_model("vitb16-openai")             # a prompted, frozen CLIP
    table = clipiqa.score_files(model, ["photos/"])          # zero-shot / prompted scores
    history = clipiqa.adapt(model, labelled, clipiqa.AdaptConfig())   # few-shot adaptation with QGR
    clipiqa.save_checkpoint(model, "runs/adapted")           # learned tensors + card
    maps = clipiqa.explain.attribute(model, images, "ig")    # what the score looks at

plus ``meta_pretrain`` (meta-prompt pre-training over distortion tasks) and ``run_protocol`` (the evaluation
protocol with baselines). See README.md.
"""
__version__ = "0.1.0"

import importlib

from .checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from .model import IQAModel, load_model, resolve_device  # noqa: E402
from .prompts import SCENE_LABELS, SCENES, PromptConfig  # noqa: E402
from .scoring import score_files, score_images  # noqa: E402
from .weights import WeightsUnavailableError, export_backbone  # noqa: E402

_LAZY = {  # heavier parts load on first use
    "adapt": ("finetune", "adapt"), "AdaptConfig": ("finetune", "AdaptConfig"), "History": ("finetune", "History"),
    "QGRConfig": ("qgr", "QGRConfig"),
    "meta_pretrain": ("meta", "meta_pretrain"), "MetaConfig": ("meta", "MetaConfig"),
    "synthetic_tasks": ("meta", "synthetic_tasks"), "tasks_from_dataset": ("meta", "tasks_from_dataset"),
    "run_protocol": ("protocol", "run_protocol"),
    "Session": ("session", "Session"),
    "explain": ("explain", None), "data": ("data", None), "metrics": ("metrics", None),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(f".{module}", __name__)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'clipiqa' has no attribute {name!r}")


__all__ = [
    "__version__", "load_model", "IQAModel", "PromptConfig", "SCENES", "SCENE_LABELS", "resolve_device",
    "score_files", "score_images", "save_checkpoint", "read_checkpoint", "apply_checkpoint", "export_backbone",
    "WeightsUnavailableError", *_LAZY,
]
