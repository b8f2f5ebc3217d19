"""The version of both distributions, ordercancel and ordercancel-client: the one place it is written."""

__version__ = "0.1.0"
