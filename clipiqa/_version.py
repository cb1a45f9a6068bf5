"""The clipiqa version, in a module of its own so that any module can import it without importing the package's
public API (``clipiqa/__init__``) and so without an import cycle. Keep it equal to pyproject's ``version``."""
__version__ = "0.1.0"
