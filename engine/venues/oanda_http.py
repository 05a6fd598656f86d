"""Our own OANDA v20 client on aiohttp: the REST calls and the two HTTP chunked streams.

Why our own: OANDA's Python bindings are unmaintained, and what we need is small — a Bearer
token on every request, the account id in every path, JSON in and out, and streams that are
one JSON object per line (a ``HEARTBEAT`` every few seconds while nothing else happens). What
a caller must know:

- a 429 is retried after ``Retry-After`` (or a doubling wait from ``retry_min_s``) up to
  ``retries`` times, then raised as ``RateLimited``; every other 4xx/5xx is a ``V20Error``
  carrying v20's ``errorCode`` / ``errorMessage`` and the whole body (a reject transaction);
- ``stream`` raises ``StreamStalled`` when no line (data or heartbeat) arrived for
  ``stale_after_s``, ``StreamClosed`` when the server ended it: the caller reconnects;
- nothing here retries a stream or keeps state: ``oanda_data`` / ``oanda_exec`` do.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

__all__ = ["RateLimited", "StreamClosed", "StreamStalled", "V20Client", "V20Error"]


class V20Error(Exception):
    """A v20 error answer: ``status``, ``code`` (v20's ``errorCode``), ``body`` (the JSON)."""

    def __init__(self, status: int, body: Mapping[str, Any] | None, method: str, path: str):
        self.status = status
        self.body = dict(body or {})
        self.code = str(self.body.get("errorCode") or "")
        msg = str(self.body.get("errorMessage") or "")
        super().__init__(f"{method} {path}: HTTP {status} {self.code} {msg}".rstrip())


class RateLimited(V20Error):
    """429 after every retry."""


class StreamStalled(Exception):
    """No line, not even a heartbeat, for ``stale_after_s``."""


class StreamClosed(Exception):
    """The server ended the stream."""


class V20Client:
    """One account at one v20 server. ``rest_url`` / ``stream_url``: scheme://host[:port]
    (OANDA keeps its streams on a host of their own; a local server serves both)."""

    def __init__(
        self,
        rest_url: str,
        token: str,
        account_id: str,
        *,
        stream_url: str = "",
        timeout_s: float = 10.0,
        retries: int = 3,
        retry_min_s: float = 0.2,
    ) -> None:
        if not rest_url:
            raise ValueError("OANDA needs rest_url (its REST host for your account's environment)")
        self.rest_url = rest_url.rstrip("/")
        self.stream_url = (stream_url or rest_url).rstrip("/")
        self.account_id = account_id
        self.timeout_s, self.retries, self.retry_min_s = timeout_s, retries, retry_min_s
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept-Datetime-Format": "RFC3339",
            "Content-Type": "application/json",
        }
        self._session: aiohttp.ClientSession | None = None
        #: 429 answers seen, requests sent (for the operator's view and tests)
        self.rate_limited = 0
        self.requests = 0

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def path(self, tail: str) -> str:
        return f"/v3/accounts/{self.account_id}{tail}"

    # --- REST ------------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        tail: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call under ``/v3/accounts/{id}`` (``tail`` "" for the account itself)."""
        path = self.path(tail)
        wait = self.retry_min_s
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for attempt in range(self.retries + 1):
            self.requests += 1
            async with self._s().request(
                method, self.rest_url + path, params=params, json=body, timeout=timeout
            ) as r:
                text = await r.text()
                data = json.loads(text) if text.strip() else {}
                if r.status < 400:
                    return data
                if r.status != 429:
                    raise V20Error(r.status, data, method, path)
                self.rate_limited += 1
                if attempt == self.retries:
                    raise RateLimited(r.status, data, method, path)
                after = r.headers.get("Retry-After")
                delay = float(after) if after and _is_num(after) else wait
            await asyncio.sleep(min(delay, 30.0))
            wait *= 2
        raise AssertionError("unreachable")

    async def instruments(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/instruments"))["instruments"])

    async def pricing(self, names: list[str]) -> list[dict[str, Any]]:
        got = await self.request("GET", "/pricing", params={"instruments": ",".join(names)})
        return list(got.get("prices") or [])

    async def summary(self) -> dict[str, Any]:
        return dict((await self.request("GET", "/summary"))["account"])

    async def create_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", "/orders", body={"order": order})

    async def replace_order(self, spec: str, order: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", f"/orders/{spec}", body={"order": order})

    async def cancel_order(self, spec: str) -> dict[str, Any]:
        return await self.request("PUT", f"/orders/{spec}/cancel")

    async def order(self, spec: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/orders/{spec}"))["order"])

    async def pending_orders(self) -> dict[str, Any]:
        return await self.request("GET", "/pendingOrders")

    async def open_positions(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/openPositions"))["positions"])

    async def open_trades(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/openTrades"))["trades"])

    async def transactions_since(self, since_id: int) -> dict[str, Any]:
        """``{"transactions": [...], "lastTransactionID": "N"}`` after transaction ``since_id``."""
        return await self.request("GET", "/transactions/sinceid", params={"id": str(since_id)})

    # --- streams ---------------------------------------------------------------------------------
    async def stream(
        self, tail: str, params: Mapping[str, str] | None = None, stale_after_s: float = 10.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The objects of a chunked stream under the account (``/pricing/stream``,
        ``/transactions/stream``), heartbeats included, until it stalls or ends."""
        path = self.path(tail)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        self.requests += 1
        async with self._s().get(self.stream_url + path, params=params, timeout=timeout) as r:
            if r.status >= 400:
                text = await r.text()
                data = json.loads(text) if text.strip().startswith("{") else {}
                if r.status == 429:
                    self.rate_limited += 1
                raise V20Error(r.status, data, "GET", path)
            while True:
                try:
                    line = await asyncio.wait_for(r.content.readline(), stale_after_s)
                except TimeoutError:
                    raise StreamStalled(f"{tail}: nothing for {stale_after_s:g}s") from None
                if not line:
                    raise StreamClosed(f"{tail}: the server ended the stream")
                line = line.strip()
                if line:
                    yield json.loads(line)


def _is_num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
