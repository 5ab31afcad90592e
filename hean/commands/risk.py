"""``hean risk set KEY VALUE [--symbol S] [RUN_ID]``: change a risk limit of a running engine."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("risk", help="change a risk limit of a running engine")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = act.add_parser(
        "set",
        help="set a risk limit while the engine runs (acknowledged and recorded in the run's summary)",
        description="Set a pre-trade risk limit of a running engine. Per symbol (all of them, or --symbol): "
        "max_order_qty, max_position (lots; or max_order_qty_units, max_position_units in the instrument's own "
        "units, e.g. 0.5 for half a BTC), rate_per_symbol, collar_ticks, max_notional, collar_frac, "
        "max_open_orders_symbol. For the whole account: rate_total, max_open_orders, max_gross_exposure, "
        "max_leverage, daily_loss_limit, max_drawdown. 0 disables a limit. The engine answers with what it "
        "applied (exit 0) or why it refused (exit 1).",
    )
    s.add_argument("key", metavar="KEY", help="the limit (see above)")
    s.add_argument("value", metavar="VALUE", help="its new value")
    s.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run (default: the only one running)")
    s.add_argument("--symbol", help="only this symbol (per-symbol limits)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hean.commands.stop import request

    return request(args.run_id, {"op": "set", "symbol": args.symbol, "key": args.key, "value": args.value})
