"""Benchmark harnesses behind ``hean bench TARGET`` (one module per target, each with ``main(argv)``)."""
