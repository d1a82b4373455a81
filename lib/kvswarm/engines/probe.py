"""Small HTTP calls to an engine's own endpoints (detection and cache resets).

Never raises for a network or HTTP failure: a `Reply` carries the status (None when no
answer came) and the body, so callers turn outcomes into reports, not exceptions.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["Reply", "get", "post"]

_BODY_LIMIT = 300


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange: `status` None when no response came (then `error` says why)."""

    url: str
    status: int | None
    body: bytes = b""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def describe(self) -> str:
        """A one-line account: `HTTP 404 from URL: body` or `cannot reach URL: reason`."""
        if self.status is None:
            return f"cannot reach {self.url}: {self.error}"
        text = self.body[:_BODY_LIMIT].decode("utf-8", "replace").strip()
        return f"HTTP {self.status} from {self.url}" + (f": {text}" if text else "")


def get(url: str, timeout_s: float, api_key: str | None = None) -> Reply:
    """GET `url`; `api_key` (only for the target's own API) as a bearer token."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return _call(urllib.request.Request(url, headers=headers), timeout_s)


def post(url: str, timeout_s: float, body: Any = None) -> Reply:
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    return _call(request, timeout_s)


def _call(request: urllib.request.Request, timeout_s: float) -> Reply:
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(url, response.status, response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except OSError:
            body = b""
        return Reply(url, exc.code, body)
    except urllib.error.URLError as exc:
        return Reply(url, None, error=str(exc.reason))
    except OSError as exc:
        return Reply(url, None, error=str(exc) or exc.__class__.__name__)
