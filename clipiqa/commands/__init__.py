"""The ``clipiqa`` subcommands, one module each; importing this package registers them all, in this order, with
:func:`clipiqa.commands.common.command`. Why their imports of torch, pandas and the model code sit inside functions:
see :mod:`clipiqa.commands.common`.
"""
# The order here is the order of `clipiqa --help`.
from . import score  # noqa: F401, I001
from . import models  # noqa: F401
from . import adapt  # noqa: F401
from . import pretrain  # noqa: F401
from . import bench  # noqa: F401
from . import explain  # noqa: F401
from . import export  # noqa: F401
from . import gate  # noqa: F401
from . import watch  # noqa: F401
from . import versions  # noqa: F401
from . import report  # noqa: F401
from . import dashboard  # noqa: F401

__all__ = ["score", "models", "adapt", "pretrain", "bench", "explain", "export", "gate", "watch", "versions", "report", "dashboard"]
