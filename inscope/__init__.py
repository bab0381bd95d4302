"""inscope: microscope-inline real-time detection service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inscope")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
