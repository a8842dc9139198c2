"""`WebhookSender`: POSTs events to a subscription's webhook, retrying with back-off."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stabilize_events.errors import InvalidArgumentError
from stabilize_events.subscriptions.errors import WebhookDeliveryError

if TYPE_CHECKING:
    from stabilize_events._core import Event

logger = logging.getLogger("stabilize_events.subscriptions")


def validate_webhook_url(url: str) -> None:
    """Raise `InvalidArgumentError` unless ``url`` is an http:// or https:// URL with a host."""
    parts = urllib.parse.urlsplit(url)
    # urllib would also open file:// and ftp:// URLs: a webhook must be HTTP.
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgumentError(f"webhook_url must be an http:// or https:// URL, not {url!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


class WebhookSender:
    """Sends each event as JSON (``Event.to_dict()``) in a POST; a 2xx answer is success.

    Any other answer, a connection error or no answer within ``timeout`` seconds is
    retried up to ``attempts`` times in all, waiting ``backoff`` seconds, doubled after
    each attempt (at most ``max_backoff``). Setting ``stop`` cuts a wait short and
    gives up (the event is delivered again later).
    """

    def __init__(
        self, *, timeout: float, attempts: int, backoff: float, max_backoff: float, stop: threading.Event
    ) -> None:
        """A sender with these retry settings; ``attempts`` must be at least 1."""
        if attempts < 1:
            raise InvalidArgumentError(f"webhook_attempts must be >= 1, not {attempts}")
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._stop = stop
        self._opener = urllib.request.build_opener()

    def post(self, url: str, subscription_id: str, event: Event) -> None:
        """POST ``event`` to ``url``; `WebhookDeliveryError` if every attempt fails."""
        body = json.dumps(event.to_dict(), default=_json_default).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stabilize-events",
            "X-Subscription-Id": subscription_id,
            "X-Event-Id": event.event_id,
            "X-Event-Sequence": str(event.sequence),
        }
        delay = self._backoff
        failure = ""
        for attempt in range(1, self._attempts + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self._timeout) as response:
                    response.read()
                    if 200 <= response.status < 300:
                        return
                    failure = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                failure = f"HTTP {error.code}"
                error.close()
            except (OSError, ValueError) as error:  # URLError, timeouts, refused connections
                failure = repr(error)
            logger.warning(
                "webhook %s attempt %d/%d for event %s failed: %s",
                url,
                attempt,
                self._attempts,
                event.event_id,
                failure,
            )
            if attempt < self._attempts:
                if self._stop.wait(delay):
                    break  # stopping: give up now, the event is delivered again later
                delay = min(delay * 2, self._max_backoff)
        raise WebhookDeliveryError(f"POST {url} failed after {attempt} attempt(s): {failure}")


__all__ = ["WebhookSender", "validate_webhook_url"]
