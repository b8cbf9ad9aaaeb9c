"""
Replies as models: the one place where reply bytes become a model or an exception.

The invoice API's decoders live in `_invoice` (its docstring states the hardening rules every
decoder follows); the classic Merchant API's in `_classic` and `_status`, read through
`_tree`, which uses the same hardened parser.
xmltodict is imported inside this package and nowhere else.
"""

from __future__ import annotations

from freedompay_async._decode._classic import (
    decode_cancel,
    decode_capture,
    decode_card_add,
    decode_card_list,
    decode_card_remove,
    decode_refund,
)
from freedompay_async._decode._invoice import (
    OrderedNode,
    decode_info,
    decode_init,
    decode_payment,
    decode_qr,
    parse_ordered,
)
from freedompay_async._decode._status import decode_payment_status

__all__ = [
    "OrderedNode",
    "decode_cancel",
    "decode_capture",
    "decode_card_add",
    "decode_card_list",
    "decode_card_remove",
    "decode_info",
    "decode_init",
    "decode_payment",
    "decode_payment_status",
    "decode_qr",
    "decode_refund",
    "parse_ordered",
]
