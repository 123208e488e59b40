"""The rows of bench/run.py, a module each; ``base`` says what a row is and what it needs.

``throughput`` (nonstream, stream), ``cpu``, ``latency``, ``memory``, ``workers``, ``ops``,
``identity``, ``replicas``, ``reasoning``, ``codex``, ``micro``, ``instructions``. A row
imports ``base``, ``harness`` and ``report``, and at most another row (``ops`` takes the
fixed-rate measure of ``cpu``); never the driver. This file imports nothing.
"""
