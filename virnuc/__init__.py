"""virnuc: VirNucPro viral-sequence prediction as a crash-safe GPU service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("virnuc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
