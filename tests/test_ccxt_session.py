"""The ccxt session helpers: where an exchange points, its thread, its keys kept out of text."""

from __future__ import annotations

import asyncio

import pytest

from engine.venues.ccxt_session import AsyncBridge, Credentials, make_exchange, rebase_urls


def _strings(tree: object) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in _strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in _strings(v)]
    return []


def test_rebase_swaps_every_host_and_keeps_paths() -> None:
    urls = {
        "public": "https://api.example.test/api/v3",
        "ws": {"spot": "wss://stream.example.test:9443/ws", "list": ["https://a.test/x"]},
        "other": 5,
    }
    out = rebase_urls(urls, "http://127.0.0.1:8001", "ws://127.0.0.1:8001/")
    assert out == {
        "public": "http://127.0.0.1:8001/api/v3",
        "ws": {"spot": "ws://127.0.0.1:8001/ws", "list": ["http://127.0.0.1:8001/x"]},
        "other": 5,
    }
    assert urls["public"] == "https://api.example.test/api/v3"  # the input is not changed


@pytest.mark.parametrize("exchange_id", ["binanceus", "coinbase", "kraken"])
def test_make_exchange_points_every_address_at_the_local_server(exchange_id: str) -> None:
    settings = {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9", "timeout_ms": 1500}
    ex = make_exchange(exchange_id, settings, Credentials("k" * 16, "s" * 32))
    try:
        addresses = [s for s in _strings(ex.urls["api"]) if "://" in s]
        assert addresses
        assert all(s.startswith(("http://127.0.0.1:9", "ws://127.0.0.1:9")) for s in addresses)
        assert ex.timeout == 1500 and ex.enableRateLimit is False
        assert ex.apiKey == "k" * 16
    finally:
        asyncio.run(ex.close())


def test_binanceus_signs_in_only_at_binance_us() -> None:
    """Every address a spot Binance.US session uses — REST, market streams and the WebSocket API
    that carries the user stream — is on the domain of its REST API (ccxt's own default sends the
    user stream to another exchange)."""
    from urllib.parse import urlsplit

    ex = make_exchange("binanceus", {})
    try:
        api = ex.urls["api"]
        used = [api["public"], api["private"], api["sapi"], api["ws"]["spot"]]
        used.append(api["ws"]["ws-api"]["spot"])
        domain = urlsplit(api["public"]).hostname.split(".", 1)[1]
        assert all(urlsplit(u).hostname.endswith("." + domain) for u in used), used
    finally:
        asyncio.run(ex.close())


def test_make_exchange_refuses_an_unknown_exchange() -> None:
    with pytest.raises(ValueError, match="no websocket exchange 'nosuch'"):
        make_exchange("nosuch", {})


def test_credentials_never_show_in_text() -> None:
    c = Credentials("my-api-key-123", "my-secret-456", "pw-789")
    assert "my-" not in repr(c) and "my-" not in str(c) and "pw-" not in f"{c}"
    assert sorted(c.values()) == ["my-api-key-123", "my-secret-456", "pw-789"]


def test_bridge_runs_coroutines_on_its_own_thread_and_stops() -> None:
    import threading

    bridge = AsyncBridge("t").start()

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert bridge.call(where(), 5) == "venue-t"
    never = bridge.submit(asyncio.sleep(3600))
    bridge.stop()
    assert not bridge.running
    assert never.cancelled() or never.done()
