"""HTTP: the ASGI core and its connection protocol, the API handlers, the admin API, the sandbox,
the demo pages, the OpenAPI document, logs and metrics.

It is handed a started store (`ordercancel.storage`) and turns requests into calls on it.
"""
