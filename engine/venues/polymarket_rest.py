"""Polymarket CLOB REST on aiohttp: public reads, level-1 key derivation, level-2 requests.

Why our own small client rather than py-clob-client's ``ClobClient``: that one blocks on a
process-wide httpx client with no per-venue timeout and no rate-limit answer, and resolves tick
size, neg-risk and fee per token with extra requests. Here every request runs on the venue's
``AsyncBridge`` loop with the venue's ``timeout_ms``; a 429 raises ``RateLimited`` with the
venue's ``Retry-After`` so the caller backs off; the signing is py-clob-client's
(``engine.venues.polymarket_wire``). The L2 HMAC covers the exact body bytes sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from engine.venues import polymarket_wire as wire
from engine.venues.ccxt_markets import VenueMarket

__all__ = ["ApiCreds", "ClobError", "ClobRest", "RateLimited", "load_markets"]


class ClobError(Exception):
    """The venue answered with an error (``status``, its message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class RateLimited(ClobError):
    """429: wait ``retry_after_s`` before the next request."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(429, f"rate limited (retry after {retry_after_s:g} s)")
        self.retry_after_s = retry_after_s


class ApiCreds(tuple[str, str, str]):
    """(api key, secret, passphrase) of level 2; the repr never shows them."""

    def __repr__(self) -> str:
        return "ApiCreds(***)"


class ClobRest:
    """One venue's REST client (create and use it on one event loop)."""

    def __init__(self, rest_url: str, timeout_ms: int = 10_000) -> None:
        self.url = rest_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000.0)
        self._session: aiohttp.ClientSession | None = None
        self.address = ""
        self.creds: ApiCreds | None = None
        self.requests = 0
        self.rate_limited = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = False,
    ) -> Any:
        """One request; ``auth``: level-2 headers over the serialized ``body``."""
        text = None if body is None else json.dumps(body, separators=(",", ":"))
        h = {"Content-Type": "application/json", **(headers or {})}
        if auth:
            if self.creds is None:
                raise ClobError(401, "no API key (derive it first)")
            h |= wire.l2_headers(self.address, self.creds, method, path, text, int(time.time()))
        self.requests += 1
        async with self._s().request(
            method, self.url + path, params=params, data=text, headers=h
        ) as resp:
            raw = await resp.text()
            if resp.status == 429:
                self.rate_limited += 1
                raise RateLimited(float(resp.headers.get("Retry-After", "1") or 1))
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = raw
            if resp.status != 200:
                msg = data.get("error") or data.get("errorMsg") if isinstance(data, dict) else raw
                raise ClobError(resp.status, str(msg or raw))
            return data

    # --- level 1 --------------------------------------------------------------------------------
    async def derive_creds(self, private_key: str, chain_id: int, nonce: int = 0) -> ApiCreds:
        """The wallet's API key: derived where it exists, else created (both signed with the
        wallet, ``ClobAuth``). Sets ``address`` and ``creds`` for level 2."""
        headers = wire.l1_headers(private_key, chain_id, nonce)
        self.address = headers["POLY_ADDRESS"]
        try:
            got = await self.request("GET", "/auth/derive-api-key", headers=headers)
        except ClobError as e:
            if isinstance(e, RateLimited) or e.status == 401:
                raise
            headers = wire.l1_headers(private_key, chain_id, nonce)
            got = await self.request("POST", "/auth/api-key", headers=headers)
        self.creds = ApiCreds((str(got["apiKey"]), str(got["secret"]), str(got["passphrase"])))
        return self.creds

    # --- pages ----------------------------------------------------------------------------------
    async def pages(self, path: str, *, auth: bool = False, max_pages: int = 1000) -> list[Any]:
        """Every item of a cursor-paged list (``data`` + ``next_cursor`` until "LTE=")."""
        out: list[Any] = []
        cursor = "MA=="
        for _ in range(max_pages):
            got = await self.request("GET", path, params={"next_cursor": cursor}, auth=auth)
            if isinstance(got, list):  # a venue that answers a plain list
                return out + got
            out += got.get("data") or []
            cursor = str(got.get("next_cursor") or wire.END_CURSOR)
            if cursor == wire.END_CURSOR:
                break
        return out

    async def markets(self, market_ids: list[str] | None = None) -> dict[str, VenueMarket]:
        """Symbol -> market of every outcome token (of ``market_ids`` only, where given)."""
        if market_ids:
            raw = [await self.request("GET", f"/markets/{cid}") for cid in market_ids]
        else:
            raw = await self.pages("/markets")
        out: dict[str, VenueMarket] = {}
        for m in raw:
            if isinstance(m, dict) and m.get("condition_id") and m.get("tokens"):
                out |= wire.parse_market(m)
        return out


def load_markets(settings: Mapping[str, Any]) -> dict[str, VenueMarket]:
    """The venue's markets, blocking (the pre-flight; a data client started without them)."""
    url = str(settings.get("rest_url") or "")
    if not url:
        raise ValueError("polymarket: rest_url is not set (the CLOB's REST address)")
    ids = [str(x) for x in settings.get("market_ids") or []]

    async def go() -> dict[str, VenueMarket]:
        rest = ClobRest(url, int(settings.get("timeout_ms", 10_000)))
        try:
            return await rest.markets(ids or None)
        finally:
            await rest.close()

    return asyncio.run(go())
