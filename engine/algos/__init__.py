"""Execution algorithms: parent orders worked through child orders (DESIGN §2, exec).

One module per job: ``engine`` (``AlgoEngine``, what exec runs: parents in, child orders and
parent events out), ``base`` (the ``Algo`` interface, ``Parent``/``Child`` bookkeeping), the
algorithms ``twap``, ``vwap``, ``iceberg``, ``pov``, and ``recovery`` (snapshots and the
rebuild after a crash). Import from those modules; this package re-exports nothing.
"""
