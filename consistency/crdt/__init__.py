"""State-based CRDTs for the AP tier (pure: no I/O).

Every type is immutable: operations and ``merge`` return new objects. Each
has ``to_wire()``/``from_wire()`` (nested arrays of str/int/bool only, see
``_wire`` for why) and ``canonical_bytes()``/``from_bytes()`` (msgpack of the
wire form). Equal states have equal bytes; the Redis Lua merge must produce
the same bytes.
"""

from ._wire import SAFE_INT, CRDTError, InvalidValueError, Scalar, WireFormatError
from .awset import AWSet, make_tag
from .counter import CounterOverflowError, PNCounter
from .entity import Entity
from .register import LWWRegister

__all__ = [
    "SAFE_INT",
    "AWSet",
    "CRDTError",
    "CounterOverflowError",
    "Entity",
    "InvalidValueError",
    "LWWRegister",
    "PNCounter",
    "Scalar",
    "WireFormatError",
    "make_tag",
]
