"""Ring failures, in a module of their own so the ring, its producer and its consumer share them
without importing one another."""

from __future__ import annotations


class RingError(RuntimeError):
    """Base class of ring failures."""


class RingCorruptedError(RingError):
    """A frame failed validation: the ring's memory is not what a producer wrote."""


class FrameTooLargeError(RingError, ValueError):
    """A frame larger than the ring's maximum payload."""


class RingFullError(RingError, TimeoutError):
    """The producer waited past its timeout for gating consumers to make room."""


class ProducerDeadError(RingError):
    """The producer's process is gone and nothing more will arrive."""
