"""kdsl: Knowledge-Decoupled Synergetic Learning for few-shot, multimodal dialogue intent recognition."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdsl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
