"""Gekko: engine/venues — where orders go and market data comes from, one venue kind at a time.

Two interfaces per venue (DESIGN §6): the execution client (``base.ExecutionClient``, with the
status reports of ``reports``) and the market-data client (``data.MarketDataClient``). The
``registry`` maps a ``[[venues]]`` kind to the factories of both. The simulated exchange is
kind ``"sim"``: ``sim`` (matching our requests), ``sim_flow`` (the market's flow filling us,
halts), ``sim_record`` (its durable record), ``sim_state``, ``sim_data`` (the configured market
source as its market data) and ``multi`` (several simulated venues behind a smart router).
Market sources themselves live in ``engine.sources``.
"""
