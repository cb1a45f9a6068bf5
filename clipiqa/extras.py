"""The optional parts of clipiqa and the extra that installs each (docs/design.md, 'What is core').

``pip install clipiqa`` is the core: scoring, labelling and the panels, adaptation with QGR, meta pre-training,
the evaluation protocol, explanations, checkpoints and the command line. An extra adds the packages of one
optional job; its code imports them only where that job runs, through :func:`require`, so that the core imports
without them and a missing extra is one message that names it.
"""
from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "deploy": ("onnx", "onnxruntime"),  # clipiqa export (fp32 and int8), clipiqa score --onnx
    "pilot": ("voila",),  # clipiqa dashboard: the line dashboard as a web app
    "lab": ("jupyterlab", "jupytext"),  # the JupyterLab server for the guided notebooks, and their .py pairing
}
"""Extra -> the packages it installs (their import names are their distribution names); pyproject.toml's
``[project.optional-dependencies]`` lists the same (a test keeps the two equal)."""


class MissingExtraError(ImportError):
    """An optional part of clipiqa was used without the extra that installs its packages."""


def require(module: str, extra: str, what: str) -> None:
    """Check that ``module`` (a package of ``extra``) is installed for ``what`` (e.g. ``"clipiqa export"``), or
    raise :class:`MissingExtraError` naming the extra to install. Only looks (the module is not run): some packages
    must be imported with settings made first (``clipiqa.onnx_runner.import_onnxruntime``)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(f"{what} needs {module}, which is not installed: install clipiqa's {extra!r} extra "
                                f"(pip install 'clipiqa[{extra}]'; in a clone of the repository: "
                                f".venv/bin/pip install -e '.[{extra}]')")


__all__ = ["EXTRAS", "MissingExtraError", "require"]
