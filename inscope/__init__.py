"""inscope: microscope-inline real-time detection service."""

__version__ = "0.1.0"
