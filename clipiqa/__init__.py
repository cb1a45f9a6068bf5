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
import importlib

from . import threads as _threads
from ._version import __version__

# Before anything here can import torch: OpenMP reads its wait policy once, when torch loads it; a class of
# notebook kernels on one server must not spin on each other's cores (clipiqa/threads.py, docs/design.md).
_threads.configure()

# Every public name loads on first use (PEP 562). Measured on the 2-core CI machine: importing the API eagerly
# (torch, open_clip, torchvision) costs 2-6 s, and `clipiqa --help` must start in under 1 s
# (``benchmarks/run.py --only cli``); `import clipiqa.cli` must not pay for the model code.
_LAZY = {
    "load_model": ("factory", "load_model"), "resolve_device": ("factory", "resolve_device"),
    "IQAModel": ("model", "IQAModel"),
    "PromptConfig": ("prompts", "PromptConfig"), "SCENES": ("prompts", "SCENES"),
    "SCENE_LABELS": ("prompts", "SCENE_LABELS"),
    "score_files": ("scoring", "score_files"), "score_images": ("scoring", "score_images"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"), "read_checkpoint": ("checkpoint", "read_checkpoint"),
    "apply_checkpoint": ("checkpoint", "apply_checkpoint"),
    "export_backbone": ("weights", "export_backbone"),
    "WeightsUnavailableError": ("weights", "WeightsUnavailableError"),
    "adapt": ("finetune", "adapt"), "AdaptConfig": ("finetune", "AdaptConfig"), "History": ("history", "History"),
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
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value  # later uses skip this function
        return value
    raise AttributeError(f"module 'clipiqa' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:  # tab completion in notebooks lists the lazy names too
    return sorted(set(globals()) | set(__all__))
