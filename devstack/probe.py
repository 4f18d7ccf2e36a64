"""One GET against a child process's HTTP endpoint, for readiness checks and probes.

A child that is still starting (nothing listens yet) or already gone answers status 0 instead of
raising: the callers poll these until they say what they wait for.
"""

from __future__ import annotations

import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 0.5


def http_status(url: str, timeout: float = PROBE_TIMEOUT_S) -> int:
    """The status of a GET; 0 when nothing answers. The body is not read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


def http_ok(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    return http_status(url, timeout) == 200


def http_get(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of a GET, error statuses included; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""
