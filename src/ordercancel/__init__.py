"""ordercancel: the Order Cancellation API, wire-compatible with the published one."""

__version__ = "0.1.0"
__all__ = ["__version__"]
