"""Revenue funnel review kit: governed definitions, tested funnel statistics, a reproducible board pack."""

from importlib.metadata import PackageNotFoundError, version

from analysis.errors import AnalysisError

try:
    __version__ = version("revenue-funnel-kit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["AnalysisError", "__version__"]
