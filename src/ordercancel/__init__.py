"""ordercancel: the Order Cancellation API, wire-compatible with the published one."""

# The version is written once, in the client's package: the client is installed alone too, and
# the server depends on exactly the same version of it.
from ordercancel.client._version import __version__

__all__ = ["__version__"]
