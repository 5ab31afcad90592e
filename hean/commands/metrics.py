"""``hean metrics [--port P] [--addr A] [--once]``: the telemetry of running engines for Prometheus."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="serve the running engines' telemetry to Prometheus (text exposition format)",
        description="Serve every running engine's counters, per-stage latency histograms and percentiles, ring "
        "fill, risk state and rejects on http://ADDR:PORT/metrics, read from their shared-memory telemetry at "
        "each scrape (nothing is added to the engine's hot path). Stops on Ctrl-C. Needs prometheus-client "
        "(pip install -e '.[ops]').",
    )
    p.add_argument("--port", type=int, default=9464, help="TCP port (default 9464)")
    p.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this host only)")
    p.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    except ImportError:
        print("hean: metrics need prometheus-client: pip install -e '.[ops]'", file=sys.stderr)
        return 2
    from hean.telemetry.metrics import EngineCollector

    registry = CollectorRegistry(auto_describe=False)
    collector = EngineCollector()
    registry.register(collector)
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        collector.close()
        return 0
    if not 0 < args.port < 65536:
        print(f"hean: --port {args.port}: not a TCP port", file=sys.stderr)
        return 2
    try:
        server, thread = start_http_server(args.port, addr=args.addr, registry=registry)
    except OSError as e:
        print(f"hean: cannot listen on {args.addr}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"hean: metrics on http://{args.addr}:{args.port}/metrics (Ctrl-C stops)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
        collector.close()
        return 0
