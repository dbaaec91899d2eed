"""agentbus benchmarks: throughput, latency, replay and footprint, each against a baseline
measured in the same run. Run them with ``python -m benchmarks`` (see ``__main__``);
the measured table lives in ``benchmarks/RESULTS.md``.

Needs the ``bench`` extra (``pip install -e ".[bench]"``) and Redis at 127.0.0.1:6379.
"""
