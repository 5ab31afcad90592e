"""``hean bench risk``: ns per full pre-trade risk check and per routed order including the state machine.

Figures (one core, in-process, kernels called from an ``_nrt=False`` numba loop as the engine's stage does):

* **risk.check** -- :func:`risk_on_intent` on NEW limit orders that pass *every* check (all limits
  configured, none binding: tick/lot, size, notional, collar, position with open orders, gross exposure over
  all symbols, leverage, daily loss, drawdown, open orders, per-symbol and total rate windows), alternating
  buy/sell over the symbols; the forwarded ORDER is written.
* **risk.reject** -- an intent rejected at the first check (bad symbol): the floor of a call.
* **risk.report** -- :func:`risk_on_report` applying a fill (position, average-cost PnL, open quantity,
  loss check).
* **router.route** -- :func:`router_on_order`: a passive NEW gets ids, a venue, a parent and a child order
  in the table, two state transitions (NEW -> SENT), and the venue ORDER written.
* **router.route_split** -- a marketable NEW split across three venues (ranked by fee-adjusted price).
* **router.cycle** -- route + the venue's ACK and FILL through :func:`router_on_report` (four more
  transitions, parent aggregation, reports to risk written): one order's whole life in the router.

Each figure is measured twice: the mean over a tight loop (``total ns / calls``) and, per call, with
CLOCK_MONOTONIC around each call into an HDR histogram (:mod:`hean.telemetry.histogram`); per-call values
include one clock read (~20-35 ns here, printed as ``clock``). Targets (issue #5): risk check <= 100 ns,
route plus state update <= 200 ns. The machine is shared: compare figures from one run.
"""

from __future__ import annotations

import sys

import numpy as np

from hean.atomics import now_ns
from hean.commands import HeanParser, emit_json, text_out
from hean.jit import entry
from hean.records import BOOK_STATE, BUY, EXEC_REPORT, ORDER, SELL, ExecType, OrderAction, OrderType, TimeInForce
from hean.stages.risk import make_risk, risk_on_book, risk_on_intent, risk_on_report
from hean.stages.router import make_router, router_on_order, router_on_report
from hean.stages.tops import make_venue_tops, tops_set
from hean.telemetry.histogram import hist_record, new_histogram, summary

N_SYMBOLS = 4
STEP_NS = 20_000  # simulated time between intents: 50 k orders/s, under every rate limit below


def _risk_state():
    risk = make_risk(
        N_SYMBOLS,
        capital=1e9,
        value_per_tick_lot=0.01,
        price_increment=1,
        qty_increment=1,
        min_qty=1,
        max_order_qty=1_000,
        max_notional=1e9,
        max_position=10**12,
        max_gross_exposure=1e18,
        max_leverage=1e6,
        daily_loss_limit=1e9,
        max_drawdown=1e9,
        rate_per_symbol=100_000,
        rate_total=400_000,
        max_open_orders=10**12,
        max_open_orders_symbol=10**12,
        collar_ticks=1_000,
        collar_frac=0.05,
    )
    bs = np.zeros(1, BOOK_STATE)
    out = np.zeros(4, ORDER)
    for s in range(N_SYMBOLS):
        bs[0]["symbol"], bs[0]["bid_px"], bs[0]["ask_px"], bs[0]["mid"] = s, 99_999, 100_001, 100_000.0
        risk_on_book(risk, bs[0], 1, out, 0)
    return risk


def _intents(n: int = 1024, symbol_offset: int = 0) -> np.ndarray:
    it = np.zeros(n, ORDER)
    i = np.arange(n)
    it["kind"] = OrderAction.NEW
    it["symbol"] = (i % N_SYMBOLS) + symbol_offset
    it["side"] = np.where((i // N_SYMBOLS) % 2 == 0, BUY, SELL)
    it["price"] = np.where(it["side"] == BUY, 99_990, 100_010)
    it["qty"] = 1 + (i % 3)
    it["order_type"] = OrderType.LIMIT
    it["tif"] = TimeInForce.GTC
    it["venue"] = -1
    return it


# ---------------------------------------------------------------------------------------------------------
# timed loops (no NRT, like the engine's stage loops, so the inlined kernels cost what their bodies cost)
# ---------------------------------------------------------------------------------------------------------
@entry
def _risk_loop(risk, intents, out, n, t_start, hist, per_call):
    passed = 0
    t0 = now_ns()
    for i in range(n):
        now = t_start + i * STEP_NS
        if per_call:
            a = now_ns()
            passed += risk_on_intent(risk, intents[i & 1023], now, out, 0)
            hist_record(hist, now_ns() - a)
        else:
            passed += risk_on_intent(risk, intents[i & 1023], now, out, 0)
    return now_ns() - t0, passed


@entry
def _report_loop(risk, reports, n, hist, per_call):
    t0 = now_ns()
    acc = 0.0
    for i in range(n):
        if per_call:
            a = now_ns()
            acc += risk_on_report(risk, reports[i & 1023])
            hist_record(hist, now_ns() - a)
        else:
            acc += risk_on_report(risk, reports[i & 1023])
    return now_ns() - t0, acc


@entry
def _route_loop(router, tops, orders, out, rep, to_risk, n, cycle, hist, per_call):
    """Route each order; with ``cycle`` also feed the child's ACK and FILL back (frees the table slots)."""
    sent = 0
    t0 = now_ns()
    for i in range(n):
        a = now_ns() if per_call else 0
        m = router_on_order(router, orders[i & 1023], tops, i, out, 0)
        sent += m
        if cycle:
            for c in range(m):
                child = out[c]
                r = rep[0]
                r.order_id = child.order_id
                r.symbol = child.symbol
                r.side = child.side
                r.venue = child.venue
                r.price = child.price
                r.kind = 1  # ACK
                r.qty = 0
                r.leaves_qty = child.qty
                router_on_report(router, r, to_risk, 0)
                r.kind = 3  # FILL
                r.qty = child.qty
                r.leaves_qty = 0
                router_on_report(router, r, to_risk, 0)
        if per_call:
            hist_record(hist, now_ns() - a)
    return now_ns() - t0, sent


@entry
def _clock_floor(n):
    t0 = now_ns()
    x = np.int64(0)
    for _ in range(n):
        x += now_ns() & 1
    return now_ns() - t0, x


# ---------------------------------------------------------------------------------------------------------
BATCH = 1000  # calls per timed batch of the plain loop


def _figure(name: str, make, n: int) -> dict:
    """``make()`` -> ``step(per_call, hist, count) -> (total_ns, work)`` on fresh state.

    The plain loop runs in batches of BATCH calls: ``median_ns`` (median batch mean: robust against the
    host's preemptions) and ``mean_ns`` (all batches). Percentiles come from a second, per-call-timed run.
    """
    hist = new_histogram()
    step = make()
    step(False, new_histogram(), BATCH)  # warm up (first call compiles)
    step = make()
    means, total, work = [], 0, 0
    for _ in range(max(1, n // BATCH)):
        dt, w = step(False, hist, BATCH)
        means.append(dt / BATCH)
        total += dt
        work += w
    calls = len(means) * BATCH
    make()(True, hist, calls)
    s = summary(hist)
    return {
        "figure": name,
        "calls": calls,
        "median_ns": float(np.median(means)),
        "mean_ns": total / calls,
        "work": float(work),
        "per_call_p50_ns": s["percentiles_ns"].get(50.0),
        "per_call_p99_ns": s["percentiles_ns"].get(99.0),
        "per_call_p99_9_ns": s["percentiles_ns"].get(99.9),
        "per_call_max_ns": s["max_ns"],
    }


def _router_state(capacity: int):
    router = make_router(
        N_SYMBOLS, 3, maker_fee=[0.0002, 0.0001, 0.0], taker_fee=[0.0004, 0.0005, 0.0004], capacity=capacity
    )
    tops = make_venue_tops(3, N_SYMBOLS)
    for v, (aq, ask) in enumerate(((3, 100_001), (3, 100_001), (50, 100_002))):
        for s in range(N_SYMBOLS):
            tops_set(tops, v, s, 99_999, 50, ask, aq, 0)
    return router, tops


FIGURES = ("risk.check", "risk.reject", "risk.report", "router.route", "router.route_split", "router.cycle")


def run_all(n: int, only: tuple[str, ...] = FIGURES) -> list[dict]:
    """The figures named in ``only`` (default all), each over ``n`` calls, then the clock floor."""
    intents = _intents()
    out = np.zeros(4, ORDER)
    figs = []

    def risk_maker(orders):
        def make():
            risk = _risk_state()
            clock = [1_000_000_000]

            def step(per_call, hist, count):
                t = clock[0]
                clock[0] += count * STEP_NS
                return _risk_loop(risk, orders, out, count, t, hist, per_call)

            return step

        return make

    if "risk.check" in only:
        fig = _figure("risk.check", risk_maker(intents), n)
        if fig["work"] != fig["calls"]:
            raise RuntimeError(f"risk.check: only {fig['work']:.0f} intents passed: the limits are binding")
        figs.append(fig)
    if "risk.reject" in only:  # bad symbol ids: rejected by the first check
        figs.append(_figure("risk.reject", risk_maker(_intents(symbol_offset=N_SYMBOLS)), n))

    reports = np.zeros(1024, EXEC_REPORT)
    i = np.arange(1024)
    reports["kind"] = ExecType.PARTIAL_FILL
    reports["symbol"] = i % N_SYMBOLS
    reports["side"] = np.where((i // N_SYMBOLS) % 2 == 0, BUY, SELL)
    reports["qty"] = 1 + (i % 3)
    reports["price"] = 99_995 + (i % 11)
    reports["fee"] = 0.01

    def report_make():
        risk = _risk_state()
        return lambda per_call, hist, count: _report_loop(risk, reports, count, hist, per_call)

    if "risk.report" in only:
        figs.append(_figure("risk.report", report_make, n))

    def router_maker(orders, cycle, capacity):
        def make():
            router, tops = _router_state(capacity)
            vout = np.zeros(8, ORDER)
            rep = np.zeros(1, EXEC_REPORT)
            to_risk = np.zeros(4, EXEC_REPORT)
            return lambda per_call, hist, count: _route_loop(
                router, tops, orders, vout, rep, to_risk, count, cycle, hist, per_call
            )

        return make

    # without the report cycle every order stays live: the table must hold them all (4 ids per split order)
    table = 1 << 14
    if "router.route" in only:
        figs.append(_figure("router.route", router_maker(intents, False, table), min(n, 6_000)))
    marketable = _intents()
    marketable["side"] = BUY
    marketable["price"] = 100_002
    marketable["qty"] = 8  # 3 + 3 at 100_001 on venues 0 and 1 (ranked by taker fee), 2 at venue 2
    if "router.route_split" in only:
        figs.append(_figure("router.route_split", router_maker(marketable, False, table), min(n, 3_000)))
    if "router.cycle" in only:
        figs.append(_figure("router.cycle", router_maker(intents, True, 4096), n))
    dt, _ = _clock_floor(100_000)
    figs.append({"figure": "clock", "calls": 100_000, "median_ns": dt / 100_000, "mean_ns": dt / 100_000})
    return figs


def format_table(figs: list[dict]) -> str:
    lines = [
        f"{'figure':<20} {'calls':>9} {'median':>8} {'mean':>8} {'p50':>7} {'p99':>7} {'p99.9':>7} {'max':>9}",
        f"{'':<20} {'':>9} {'ns/call':>8} {'ns/call':>8} {'(per call, with one clock read; ns)':>35}",
    ]
    for f in figs:

        def g(key, f=f):
            v = f.get(key)
            return "-" if v is None else f"{v:.0f}"

        lines.append(
            f"{f['figure']:<20} {f['calls']:>9} {f['median_ns']:>8.1f} {f['mean_ns']:>8.1f} {g('per_call_p50_ns'):>7} "
            f"{g('per_call_p99_ns'):>7} {g('per_call_p99_9_ns'):>7} {g('per_call_max_ns'):>9}"
        )
    lines.append("targets (issue #5): risk.check <= 100 ns; router.route / router.cycle (route + state) <= 200 ns")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = HeanParser(prog="hean bench risk", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--calls", type=int, default=200_000, help="calls per figure (default 200000)")
    p.add_argument(
        "--json", metavar="PATH", help="also write the figures as JSON ('-': to stdout, the table to stderr)"
    )
    args = p.parse_args(argv)
    if args.calls < 1000:
        p.error("--calls must be >= 1000")
    figs = run_all(args.calls)
    print(format_table(figs), file=text_out(args.json))
    if args.json:
        emit_json(args.json, figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
