"""pyperf suite: what our ccxt venue adapters add to raw ccxt, against a local Binance.US server.

The issue asks for the adapter's added cost as a ratio to raw ccxt doing the same call in the
same run. The servers (``perf/_venue_server.py``, one process started by the main process and
shared by every worker) are the test suite's Binance.US server (``tests/venues/binance.py``: real
REST paths, HMAC signatures, matching, user stream) with two bench-only markets: a book that
moves one depth diff at a time when asked, and the real capture (``../shared/data/binance``;
synthetic diffs where it is absent) replayed whole to each new subscriber as fast as the socket
takes it. Clocks: every timestamp is ``time.monotonic_ns`` (CLOCK_MONOTONIC, the same in both
processes). The consumer polls as a strategy-side reader would, sleeping ``POLL_IDLE_S`` when
nothing is there (the feed idles 0.5 ms: add up to that in an engine run).

Benchmarks, ``<measure>-<who>``:

- ``md_latency-ccxt``: the server sends one depth diff → raw ccxt.pro's ``watch_order_book``
  returns the updated book (timed in the coroutine: the raw user's callback point);
- ``md_latency-adapter``: the same diff → ``CcxtDataClient`` (``engine/venues/ccxt_data.py``) has
  turned it into BookDelta + Quote and the consumer thread got them from ``poll_updates``;
- ``order_ack-ccxt``: raw ccxt ``create_order`` (a resting limit buy) on its loop: request sent →
  answer parsed; ``order_ack-adapter``: ``CcxtExecutionClient.submit`` → ``poll`` returns the
  ``OrderAccepted`` (each order is cancelled after, untimed);
- ``md_rate-ws``: the replay drained by a bare aiohttp websocket + ``json.loads`` (what the
  server and loopback allow at most); ``md_rate-ccxt``: raw ccxt.pro until its book reaches the
  replay's last update id; ``md_rate-adapter``: ``CcxtDataClient`` until the consumer has every
  message of the last update. Time per depth update, from the server's first frame (the REST
  snapshot fetch included); updates/s = 1 / that. In such a burst ccxt coalesces (its callback
  runs a few times a replay), so ``md_book`` gives the cost of every update alone:
- ``md_book-ccxt``: the same replay's diffs, ``json.loads`` + ccxt.pro's own
  ``handle_order_book_message`` on a book reset from the snapshot, in one thread, no network;
  ``md_book-adapter``: that plus ``BookTracker.on_book`` (``engine/venues/ccxt_book.py``: the
  book's best 100 levels diffed into BookDelta/Quote) after every diff. Time per update.

The main process prints medians, p50/p99 of the latencies, updates/s, and each adapter / ccxt
ratio. Run ``python perf/bench_venue.py --fast`` (``make perf`` runs every suite); ``--only
REGEX`` runs a subset; ``--synthetic`` ignores the capture.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyperf  # noqa: E402

from engine.instruments import Instrument, InstrumentTable  # noqa: E402
from engine.messages import (  # noqa: E402
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_session import AsyncBridge, Credentials, make_exchange  # noqa: E402

BENCHMARKS = (
    "md_latency-ccxt",
    "md_latency-adapter",
    "order_ack-ccxt",
    "order_ack-adapter",
    "md_rate-ws",
    "md_rate-ccxt",
    "md_rate-adapter",
    "md_book-ccxt",
    "md_book-adapter",
)
PAIRS = {"md_latency": "ccxt", "order_ack": "ccxt", "md_rate": "ccxt", "md_book": "ccxt"}
KEY, SECRET = "bench-venue-key", "bench-venue-secret"  # perf/_venue_server.py's made-up key
SYMBOL = "BTC/USDT"
INS = Instrument(instrument_id=1, symbol=SYMBOL, venue="bn", tick_size=0.01, lot_size=0.00001)
ORDER_PX, ORDER_QTY = 30000.0, 0.001  # a buy far below the market: it rests, never fills
POLL_IDLE_S = 20e-6
WAIT_S = 30.0


class Servers:
    """Where the server process listens (passed to the workers on their command line)."""

    def __init__(self, spec: str) -> None:
        push, replay, udp, frames, last_u, source = spec.split(":")
        self.push_url = f"127.0.0.1:{push}"
        self.replay_url = f"127.0.0.1:{replay}"
        self.udp = ("127.0.0.1", int(udp))
        self.frames, self.last_u, self.source = int(frames), int(last_u), source
        self._sock: socket.socket | None = None

    def settings(self, which: str) -> dict[str, Any]:
        host = self.push_url if which == "push" else self.replay_url
        return {"rest_url": f"http://{host}", "ws_url": f"ws://{host}", "timeout_ms": 10_000}

    def ask(self, cmd: str) -> list[str]:
        """One control datagram, its answer split on spaces."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.settimeout(WAIT_S)
        self._sock.sendto(cmd.encode(), self.udp)
        words = self._sock.recv(256).decode().split()
        if words[0] == "error":
            raise RuntimeError(" ".join(words))
        return words


def _wait(done: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench_venue: timed out waiting for {what}")
        time.sleep(POLL_IDLE_S)


def _measuring(args: argparse.Namespace, calls: int) -> bool:
    """Keep samples of measured values only (not calibration, not warmups)."""
    if not args.worker or not args.samples_dir:
        return False
    if args.calibrate_loops or args.recalibrate_loops:
        return False
    if args.calibrate_warmups or args.recalibrate_warmups:
        return False
    return calls > (args.warmups or 0)


class Session:
    """One benchmark's state in its worker: set up on the first call, kept across loops."""

    def __init__(self, name: str, servers: Servers, args: argparse.Namespace) -> None:
        self.name, self.srv, self.args = name, servers, args
        self.calls = 0
        self.samples: list[float] = []
        self.extra: dict[str, list[float]] = {}
        self.bridge: AsyncBridge | None = None
        self.ex: Any = None
        self.client: Any = None

    def __call__(self, loops: int) -> float:
        self.calls += 1
        measure, _, who = self.name.partition("-")
        fn = getattr(self, f"_{measure}_{who}")
        values = [fn() for _ in range(loops)]
        if _measuring(self.args, self.calls):
            self.samples += values
        return sum(values)

    def _keep(self, key: str, value: float) -> None:
        if _measuring(self.args, self.calls):
            self.extra.setdefault(key, []).append(value)

    # --- raw ccxt on its own loop ------------------------------------------------------------------
    def _raw(self, which: str, creds: bool = False) -> Any:
        if self.ex is None:
            self.bridge = AsyncBridge(f"bench-{self.name}").start()

            async def make() -> Any:
                c = Credentials(KEY, SECRET) if creds else None
                ex = make_exchange("binanceus", self.srv.settings(which), c)
                await ex.load_markets()
                return ex

            self.ex = self.bridge.call(make(), WAIT_S)
        return self.ex

    # --- md_latency ------------------------------------------------------------------------------
    def _md_latency_ccxt(self) -> float:
        if self.client is None:
            ex = self._raw("push")
            self.client = got = []

            async def watch() -> None:
                while True:
                    book = await ex.watch_order_book(SYMBOL)
                    got.append((int(book["nonce"]), time.monotonic_ns()))

            assert self.bridge is not None
            self.bridge.submit(watch())
            self._first(lambda: bool(got), "raw ccxt's first book")
        got = self.client
        u, sent, _ = self._push()
        _wait(lambda: got and got[-1][0] >= u, f"raw ccxt's book at update id {u}")
        return (got[-1][1] - sent) * 1e-9

    def _md_latency_adapter(self) -> float:
        from engine.venues.ccxt_data import CcxtDataClient

        if self.client is None:
            settings = self.srv.settings("push") | {"trades": False, "stale_after_s": 3600}
            self.client = CcxtDataClient("binanceus", "bn", InstrumentTable([INS]), settings)
            self.client.connect()
            self.client.subscribe([INS.instrument_id])
            self._first(lambda: self.client.state() == "connected", "the adapter's book")
            time.sleep(0.05)
            self.client.poll_updates(1_000_000)
        poll = self.client.poll_updates
        u, sent, qty = self._push()
        want = INS.qty_to_lots(qty)
        deadline = time.monotonic() + WAIT_S
        while True:
            batch = poll(64)
            if batch:
                now = time.monotonic_ns()
                q = next((m for m in batch if type(m) is Quote and m.bid_qty == want), None)
                if q is not None:
                    self._keep("bridge", (q.ts_recv - sent) * 1e-9)
                    return (now - sent) * 1e-9
            elif time.monotonic() > deadline:
                raise TimeoutError(f"bench_venue: no Quote for update id {u}")
            else:
                time.sleep(POLL_IDLE_S)

    def _first(self, done: Any, what: str) -> None:
        """Push until the first book is there (a diff sent before the subscription is lost)."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench_venue: timed out waiting for {what}")
            self._push()
            time.sleep(0.05)

    def _push(self) -> tuple[int, int, str]:
        _, u, sent, qty = self.srv.ask("push")
        return int(u), int(sent), qty

    # --- order_ack -------------------------------------------------------------------------------
    def _order_ack_ccxt(self) -> float:
        ex = self._raw("push", creds=True)

        async def create() -> tuple[int, str]:
            t0 = time.monotonic_ns()
            order = await ex.create_order(SYMBOL, "limit", "buy", ORDER_QTY, ORDER_PX)
            t1 = time.monotonic_ns()
            assert order["id"] and order["status"] == "open", order
            return t1 - t0, order["id"]

        assert self.bridge is not None
        t0 = time.monotonic_ns()
        inner, venue_id = self.bridge.call(create(), WAIT_S)
        self._keep("caller", (time.monotonic_ns() - t0) * 1e-9)
        self.bridge.call(ex.cancel_order(venue_id, SYMBOL), WAIT_S)
        return inner * 1e-9

    def _order_ack_adapter(self) -> float:
        from engine.venues.ccxt_exec import CcxtExecutionClient

        if self.client is None:
            settings = self.srv.settings("push") | {
                "engine_id": f"bv{os.getpid()}",
                "rate_limit_weight": 10**12,
                "start_timeout_s": WAIT_S,
            }
            self.client = CcxtExecutionClient(
                "binanceus", "bn", InstrumentTable([INS]), settings, Credentials(KEY, SECRET)
            )
            if self.client.state() != "connected":
                raise RuntimeError(f"exec client: {self.client.state_reason}")
            self.coid = 0
        c = self.client
        self.coid += 1
        coid = self.coid
        order = NewOrder(
            client_order_id=coid,
            strategy_id=1,
            instrument_id=INS.instrument_id,
            side=int(Side.BUY),
            order_type=int(OrderType.LIMIT),
            tif=int(TimeInForce.GTC),
            px=INS.px_to_ticks(ORDER_PX),
            qty=INS.qty_to_lots(ORDER_QTY),
            ts_origin=0,
            ts_approved=0,
        )
        t0 = time.monotonic_ns()
        refused = c.submit(order, t0)
        if refused:
            raise RuntimeError(f"exec client refused the order: {refused}")
        t1, ack = self._until(c, coid, OrderAccepted)
        self._keep("bridge", (ack.ts_recv - t0) * 1e-9)
        c.cancel(CancelOrder(coid, 1, INS.instrument_id, 0, 0), time.monotonic_ns())
        self._until(c, coid, OrderCanceled)
        return (t1 - t0) * 1e-9

    @staticmethod
    def _until(c: Any, coid: int, kind: type) -> tuple[int, Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            for ev in c.poll(time.monotonic_ns()):
                if type(ev) is OrderRejected:
                    raise RuntimeError(f"order rejected: {ev}")
                if type(ev) is kind and ev.client_order_id == coid:
                    return time.monotonic_ns(), ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench_venue: no {kind.__name__} for order {coid}")
            time.sleep(POLL_IDLE_S)

    # --- md_rate ---------------------------------------------------------------------------------
    def _elapsed_per_update(self, end_ns: int) -> float:
        """Seconds for the whole replay (pyperf divides by ``inner_loops`` = its updates)."""
        start = int(self.srv.ask("start")[1])
        return (end_ns - start) * 1e-9

    def _md_rate_ws(self) -> float:
        import aiohttp

        if self.bridge is None:
            self.bridge = AsyncBridge("bench-ws").start()
        last_u = self.srv.last_u
        url = self.srv.settings("replay")["ws_url"] + "/ws"
        stream = "btcusdt@depth@100ms"

        async def drain() -> int:
            async with aiohttp.ClientSession() as s, s.ws_connect(url, max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": [stream], "id": 1}))
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("u") == last_u:
                        return time.monotonic_ns()
            raise RuntimeError("the replay ended early")

        return self._elapsed_per_update(self.bridge.call(drain(), WAIT_S))

    def _md_rate_ccxt(self) -> float:
        ex0 = self._raw("replay")  # markets loaded once; a fresh exchange (socket) per replay
        last_u = self.srv.last_u

        async def replay() -> tuple[int, int]:
            ex = make_exchange("binanceus", self.srv.settings("replay"))
            ex.set_markets(ex0.markets, ex0.currencies)
            books = 0
            try:
                while True:
                    book = await ex.watch_order_book(SYMBOL)
                    books += 1
                    if int(book["nonce"]) >= last_u:
                        return time.monotonic_ns(), books
            finally:
                await ex.close()

        assert self.bridge is not None
        end, books = self.bridge.call(replay(), WAIT_S)
        self._keep("callbacks", books)
        return self._elapsed_per_update(end)

    def _md_rate_adapter(self) -> float:
        from engine.venues.ccxt_data import CcxtDataClient

        settings = self.srv.settings("replay") | {"trades": False, "stale_after_s": 3600}
        client = CcxtDataClient("binanceus", "bn", InstrumentTable([INS]), settings)
        tr = client.books[INS.instrument_id]
        last_u = self.srv.last_u
        n = 0
        try:
            client.connect()
            client.subscribe([INS.instrument_id])
            deadline = time.monotonic() + WAIT_S
            while True:
                batch = client.poll_updates(4096)
                if batch:
                    n += len(batch)
                    if tr.venue_nonce == last_u and batch[-1].seq == tr.seq:
                        end = time.monotonic_ns()
                        break
                elif tr.venue_nonce == last_u and client.pending() == 0 and n:
                    end = time.monotonic_ns()  # the last update changed nothing we publish
                    break
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"bench_venue: adapter at {tr.venue_nonce}, not {last_u}")
                else:
                    time.sleep(POLL_IDLE_S)
        finally:
            client.close()
        self._keep("messages", n)
        return self._elapsed_per_update(end)

    # --- md_book: every update alone, no network ------------------------------------------------
    def _md_book_ccxt(self) -> float:
        return self._book_pass(adapter=False)

    def _md_book_adapter(self) -> float:
        return self._book_pass(adapter=True)

    def _book_pass(self, adapter: bool) -> float:
        from engine.venues.ccxt_book import BookTracker
        from perf._venue_server import FixedReplay

        if self.client is None:
            replay = FixedReplay(synthetic=self.srv.source != "capture")
            snap = json.loads(replay.snapshot)
            self.client = (make_exchange("binanceus", {}), snap, replay.frames)
        ex, snap, frames = self.client
        book = ex.order_book({})
        book.reset(ex.parse_order_book(snap, SYMBOL, None, "bids", "asks"))
        book["nonce"] = first = int(snap["lastUpdateId"])
        tr = BookTracker(INS, 100)
        tr.on_book(book)  # the snapshot: untimed
        handle, loads, on_book = ex.handle_order_book_message, json.loads, tr.on_book
        n = 0
        t0 = time.perf_counter()
        for text in frames:
            msg = loads(text)
            if msg["u"] <= first:
                continue
            handle(None, msg, book)
            if adapter:
                n += len(on_book(book))
        elapsed = time.perf_counter() - t0
        self._keep("messages", n)
        return elapsed

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        if self.samples and self.args.samples_dir:
            path = Path(self.args.samples_dir) / f"{self.name}.{os.getpid()}.json"
            with contextlib.suppress(OSError):
                path.write_text(json.dumps({"values": self.samples} | self.extra))
        if hasattr(self.client, "close"):
            with contextlib.suppress(Exception):
                self.client.close()
        if self.bridge is not None:
            if self.ex is not None:
                with contextlib.suppress(Exception):
                    self.bridge.call(self.ex.close(), 5.0)
            self.bridge.stop()


_SESSIONS: dict[str, Session] = {}


def _close_sessions() -> None:
    while _SESSIONS:
        _, s = _SESSIONS.popitem()
        s.close()


def make_func(name: str, args: argparse.Namespace) -> Any:
    def func(loops: int) -> float:
        s = _SESSIONS.get(name)
        if s is None:
            s = _SESSIONS[name] = Session(name, Servers(args.servers), args)
        return s(loops)

    return func


# --- the server process and the summary (main process only) ------------------------------------
def start_servers(synthetic: bool) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(ROOT / "perf" / "_venue_server.py")]
    if synthetic:
        cmd.append("--synthetic")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"perf/_venue_server.py did not start: {line}")
    return proc, ":".join(line[1:])


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _load_samples(samples_dir: str, name: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for f in sorted(Path(samples_dir).glob(f"{name}.*.json")):
        for k, v in json.loads(f.read_text()).items():
            out.setdefault(k, []).extend(v)
    return out


def print_summary(results: dict[str, pyperf.Benchmark], servers: Servers, samples: str) -> None:
    med = {n: b.median() for n, b in results.items()}
    print()
    print(
        f"Venue adapters vs raw ccxt, local Binance.US server ({servers.source} market data, "
        f"{servers.frames} depth updates a replay; nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}); medians:"
    )
    for n, v in med.items():
        measure, _, who = n.partition("-")
        s = _load_samples(samples, n)
        if measure in ("md_rate", "md_book"):
            line = f"{v * 1e6:9.1f} µs / update  ({1 / v:9,.0f} updates/s)"
            if s.get("messages") and any(s["messages"]):
                msgs = sum(s["messages"]) / len(s["messages"])
                line += f", {msgs:,.0f} messages a replay"
            if "callbacks" in s:
                cbs = sum(s["callbacks"]) / len(s["callbacks"])
                line += f", {cbs:,.0f} books returned a replay (coalesced)"
        else:
            line = f"{v * 1e6:9.1f} µs"
            vals = s.get("values", [])
            if vals:
                line += f"  (p50 {_pct(vals, 0.5) * 1e6:.0f}, p99 {_pct(vals, 0.99) * 1e6:.0f} µs"
                line += f", {len(vals)} samples)"
            if s.get("bridge"):
                line += f"; on the venue thread at p50 {_pct(s['bridge'], 0.5) * 1e6:.0f} µs"
            if s.get("caller"):
                line += f"; seen by the calling thread p50 {_pct(s['caller'], 0.5) * 1e6:.0f} µs"
        print(f"  {n:<20} {line}")
    for measure, base in PAIRS.items():
        a, b = med.get(f"{measure}-adapter"), med.get(f"{measure}-{base}")
        if a and b:
            if measure == "md_rate":
                print(f"  {measure}: adapter {1 / a:,.0f} updates/s = {b / a:.2f}x raw ccxt")
            elif measure == "md_book":
                print(
                    f"  {measure}: adapter / raw ccxt = {a / b:.2f}x per update "
                    f"(+{(a - b) * 1e6:.1f} µs: BookTracker.on_book)"
                )
            else:
                va = _load_samples(samples, f"{measure}-adapter").get("values")
                vb = _load_samples(samples, f"{measure}-{base}").get("values")
                p50 = ""
                if va and vb:
                    pa, pb = _pct(va, 0.5), _pct(vb, 0.5)
                    p50 = f"; p50s {pa / pb:.2f}x (+{(pa - pb) * 1e6:.0f} µs)"
                print(
                    f"  {measure}: adapter / raw ccxt = {a / b:.2f}x "
                    f"(+{(a - b) * 1e6:.0f} µs added by the adapter){p50}"
                )
    if servers.source != "capture":
        print("  (the Binance capture is absent: md_rate replayed synthetic diffs instead)")


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(["--servers", args.servers, "--samples-dir", args.samples_dir])
    if args.only:
        cmd.extend(["--only", args.only])


def main() -> None:
    runner = pyperf.Runner(processes=4, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "ccxt venue adapters vs raw ccxt against a local server"
    ap = runner.argparser
    ap.add_argument("--only", metavar="REGEX", default=None, help="benchmarks matching REGEX")
    ap.add_argument("--synthetic", action="store_true", help="ignore the Binance capture")
    ap.add_argument("--servers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--samples-dir", default="", help=argparse.SUPPRESS)
    args = runner.parse_args()
    proc = tmp = None
    if not args.worker:
        from tests.venues import binance_capture as bc

        if not args.synthetic and not bc.available():
            print(f"bench_venue: {bc.SKIP_REASON}: md_rate replays synthetic diffs instead")
        proc, args.servers = start_servers(args.synthetic)
        tmp = tempfile.mkdtemp(prefix="gkbv", dir="/tmp")
        args.samples_dir = tmp

    def _stop() -> None:
        _close_sessions()
        if proc is not None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(5)
            for end in (proc.terminate, proc.kill):
                if proc.poll() is None:
                    end()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(_stop)
    results: dict[str, pyperf.Benchmark] = {}
    for name in BENCHMARKS:
        if args.only and not re.search(args.only, name):
            continue
        inner = Servers(args.servers).frames if name.startswith(("md_rate", "md_book")) else None
        bench = runner.bench_time_func(name, make_func(name, args), inner_loops=inner)
        if bench is not None:
            results[name] = bench
    if not args.worker and results:
        print_summary(results, Servers(args.servers), args.samples_dir)


if __name__ == "__main__":
    main()
