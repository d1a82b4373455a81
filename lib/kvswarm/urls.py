"""Server URLs: the one place that knows the `/v1` rule and what a usable URL looks like.

A target's base URL may be given with or without its OpenAI `/v1` suffix
(`http://host:8000/v1` or `http://host:8000`). The API lives under `<root>/v1`; the
engine's own endpoints (`/tokenize`, `/metrics`, `/props`, `/reset_prefix_cache`,
`/health`) live at the root.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["api_url", "check_url", "metrics_url", "server_root"]

_SCHEMES = ("http", "https")


def check_url(text: str) -> str:
    """`text` if it is an absolute http(s) URL with a host; else ValueError saying why.

    Callers at the edge (config loading, command-line options) turn the ValueError into
    a one-line `ConfigError` naming the file, key or option.
    """
    stripped = text.strip()
    try:
        parts = urlsplit(stripped)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{text!r} has port {port}, outside 1-65535")
    return stripped


def server_root(base_url: str) -> str:
    """The server's root URL: the base URL without a trailing `/v1` (or `/`)."""
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def api_url(base_url: str, path: str) -> str:
    """The URL of an OpenAI API path (`chat/completions`, `models`) under `<root>/v1`."""
    return f"{server_root(base_url)}/v1/{path.lstrip('/')}"


def metrics_url(base_url: str) -> str:
    """The engine's Prometheus page: `<root>/metrics`."""
    return server_root(base_url) + "/metrics"
