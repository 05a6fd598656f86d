"""Which class runs each algorithm kind (``AlgoKind`` -> implementation).

Its own module so the engine and its restart code (``engine.algos.restart``) share it without
importing each other.
"""

from __future__ import annotations

from engine.algos.base import Algo
from engine.algos.iceberg import IcebergAlgo
from engine.algos.pov import PovAlgo
from engine.algos.twap import TwapAlgo
from engine.algos.vwap import VwapAlgo
from engine.messages import AlgoKind

#: AlgoKind -> implementation
ALGORITHMS: dict[int, type[Algo]] = {
    int(AlgoKind.TWAP): TwapAlgo,
    int(AlgoKind.VWAP): VwapAlgo,
    int(AlgoKind.ICEBERG): IcebergAlgo,
    int(AlgoKind.POV): PovAlgo,
}
