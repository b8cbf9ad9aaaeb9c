"""
Freedom Pay's two signatures, pure and standard-library only.

- **Detached JWS, HS512** (the `/v5/merchant/invoice/*` API): the header `X-JWS-Signature` is
  `B64H..B64S`, where `B64S = base64url(HMAC-SHA512(secret_key, B64H + "." + B64P))` and the
  payload part `B64P` (the request fields as compact JSON) is cut out. `jws_detached` reproduces
  the published invoice-init vector bit-for-bit.
- **`pg_sig`** (the classic Merchant API and every callback): lowercase hex MD5 of
  `script_name;value;value;…;secret_key`, the values ordered by the sort rule `pg_sig` documents.
  Messages are given as a mapping, as (name, value) pairs in the order sent (repeated names
  allowed), or as an `Element` (an XML element's children, see `Element.from_ordered`).

Verification compares in constant time and fails closed: a missing or malformed signature never
verifies.
"""

from __future__ import annotations

from freedompay_async.signing._jws import (
    jws_detached,
    jws_header,
    jws_payload,
    verify_jws_detached,
)
from freedompay_async.signing._pg import Element, pg_sig, script_name_from_url, verify_pg_sig

# Pickles and reprs name the public path, as they did before the module became a package.
Element.__module__ = __name__

__all__ = [
    "Element",
    "jws_detached",
    "jws_header",
    "jws_payload",
    "pg_sig",
    "script_name_from_url",
    "verify_jws_detached",
    "verify_pg_sig",
]
