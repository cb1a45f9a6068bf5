"""CLI subcommands that live beside their subsystems. Each module registers itself with ``cli.command``."""
import importlib

for _name in ("adapt", "pretrain", "bench", "explain"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as e:  # a subsystem not installed in this checkout yet
        if e.name != f"{__name__}.{_name}":
            raise
