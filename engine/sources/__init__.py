"""Gekko: engine/sources — market-data sources (synthetic market, replay, exchange-status rules).

They produce the market; they are not venues (a venue matches orders). The simulated venue's
market-data client (``engine.venues.sim_data``) serves what one of these produces.
"""
