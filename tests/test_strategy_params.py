"""Typed strategy parameters (engine/strategies/params.py): unknown keys, wrong types and
out-of-range values are refused with the key named, for Struct and dataclass ``Params`` alike."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import engine.strategies
from engine.instruments import Instrument
from engine.strategies.base import Strategy
from engine.strategies.market_maker import MarketMaker
from engine.strategies.params import ParamError, StrategyParams, check, parse_params
from engine.strategies.rebalancer import RebalancerParams
from engine.strategy_host import StrategyHost, StrategySpec

INS = [Instrument(instrument_id=1, symbol="AAPL"), Instrument(instrument_id=2, symbol="XOM")]


class _Struct(StrategyParams):
    size: int = 1
    spread: float = 2.0
    weights: dict[str, float] = {}

    def __post_init__(self) -> None:
        check(self.size > 0, "size", "must be > 0")


@dataclasses.dataclass
class _Dataclass:
    size: int = 1

    def __post_init__(self) -> None:
        check(self.size > 0, "size", "must be > 0")


@pytest.mark.parametrize("params_type", [_Struct, _Dataclass])
def test_unknown_wrong_type_and_range_name_the_key(params_type: type) -> None:
    assert parse_params(params_type, {"size": 3}).size == 3
    with pytest.raises(ParamError, match=r"did you mean 'size'") as e:
        parse_params(params_type, {"sise": 3})
    assert e.value.key == "sise"
    with pytest.raises(ParamError) as e:
        parse_params(params_type, {"size": "3"})
    assert (e.value.key, e.value.problem) == ("size", "expected int, got str")
    with pytest.raises(ParamError) as e:
        parse_params(params_type, {"size": 1.5})
    assert e.value.key == "size" and "expected int" in e.value.problem
    with pytest.raises(ParamError) as e:
        parse_params(params_type, {"size": 0})
    assert (e.value.key, e.value.problem) == ("size", "must be > 0")


def test_ints_pass_as_floats_and_nested_values_are_checked() -> None:
    assert parse_params(_Struct, {"spread": 3}).spread == 3.0
    with pytest.raises(ParamError, match=r"expected float, got str") as e:
        parse_params(_Struct, {"weights": {"AAPL": "x"}})
    assert e.value.key.startswith("weights")
    with pytest.raises(ParamError) as e:
        parse_params(RebalancerParams, {})
    assert (e.value.key, e.value.problem) == ("targets", "required parameter is missing")


def test_a_strategy_built_with_a_misspelt_param_is_refused() -> None:
    with pytest.raises(ValueError, match=r"params\.half_spread_tick: unknown parameter"):
        StrategyHost([StrategySpec(MarketMaker, {"half_spread_tick": 2})], INS)
    host = StrategyHost([StrategySpec(MarketMaker, {"half_spread_ticks": 3, "size": 2})], INS)
    mm = host.strategy(1)
    assert (mm.half_spread_ticks, mm.size, mm.p.max_inventory) == (3.0, 2, 10)


def test_every_shipped_strategy_declares_params() -> None:
    shipped = []
    for mod in pkgutil.iter_modules(engine.strategies.__path__):
        module = importlib.import_module(f"engine.strategies.{mod.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Strategy)
                and cls is not Strategy
                and cls.__module__ == module.__name__
            ):
                shipped.append(cls)
                assert cls.Params is not None, f"{cls.__name__} declares no Params"
    assert len(shipped) >= 5


def test_a_strategy_without_params_still_loads() -> None:
    class Loose(Strategy):
        pass

    host = StrategyHost([StrategySpec(Loose, {"anything": 1})], INS)
    assert host.strategy(1).params == {"anything": 1} and host.strategy(1).p is None
