"""
Reply bodies decoded from their Content-Encoding one chunk at a time, under a size cap.

Pure: bytes in, bytes out, no I/O. The transport reads the raw (still compressed) body in chunks
and feeds each one here; every `zlib` call is told how many bytes it may produce, so a
compression bomb (a kilobyte that inflates to gigabytes) costs at most the cap plus one byte of
memory, whatever its ratio. The cap counts *decoded* bytes; the raw bytes read are capped too, so
a stream that sends input forever without producing output also stops.

Encodings: `identity`, `gzip` (and `x-gzip`, concatenated members included) and `deflate` (the
zlib format, or raw deflate as some servers send). The SDK asks for `gzip, deflate` and decodes
nothing else: a `br` or `zstd` reply (which no request asked for) is refused.
"""

from __future__ import annotations

import zlib

__all__ = ["ACCEPT_ENCODING", "InflateError", "Inflater"]

#: The Accept-Encoding header the SDK sends: what `Inflater` decodes under its cap.
ACCEPT_ENCODING = "gzip, deflate"

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MAX_MEMBERS = 64
_ZLIB_METHOD = 8
_ZLIB_MAX_WINDOW = 7
_ZLIB_CHECK = 31


class InflateError(ValueError):
    """The body cannot be decoded: an unsupported encoding, corrupt or truncated data."""


def _encoding(header: str | None) -> str:
    """Normalise a Content-Encoding header to one of identity, gzip or deflate."""
    if header is None:
        return "identity"
    codings = [part.strip().lower() for part in header.split(",")]
    codings = [part for part in codings if part and part != "identity"]
    if not codings:
        return "identity"
    if len(codings) > 1:
        raise InflateError(f"Content-Encoding {', '.join(codings)} (stacked) is not supported")
    coding = codings[0]
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    if coding == "deflate":
        return "deflate"
    shown = coding if coding.isascii() and coding.isprintable() else ascii(coding)
    raise InflateError(f"Content-Encoding {shown[:40]} is not supported (the SDK asks for gzip)")


class Inflater:
    """
    Decode one body incrementally; stop at the cap.

    Args:
        content_encoding: The reply's Content-Encoding header, or None.
        cap: Decoded bytes accepted; one more is kept so the decoder can say it was too large.
        max_input: Raw bytes accepted before the body counts as too large.

    Raises:
        InflateError: The encoding is not supported.
    """

    def __init__(self, content_encoding: str | None, *, cap: int, max_input: int) -> None:
        self.encoding = _encoding(content_encoding)
        self._cap = cap
        self._max_input = max_input
        self._chunks: list[bytes] = []
        self._size = 0
        self._input = 0
        self._members = 0
        self._pending = b""  # deflate: the first bytes, until the format can be told
        self._decompressor: zlib._Decompress | None = None
        if self.encoding == "gzip":
            self._decompressor = zlib.decompressobj(_GZIP_WBITS)
        self.over = False

    @property
    def size(self) -> int:
        """Decoded bytes kept so far."""
        return self._size

    def _keep(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > self._cap:
                self.over = True

    def feed(self, data: bytes) -> bool:
        """
        Decode one chunk of the raw body.

        Args:
            data: The next raw bytes.

        Returns:
            True once the body is over the cap (decoded or raw): stop reading and drop the
            connection; the body kept is the cap plus one byte.

        Raises:
            InflateError: The data is corrupt.
        """
        if self.over or not data:
            return self.over
        self._input += len(data)
        if self.encoding == "identity":
            self._keep(data[: self._cap + 1 - self._size])
        else:
            if self._decompressor is None:
                data = self._start_deflate(data)
            if self._decompressor is not None:
                self._inflate(data)
        if self._input > self._max_input:
            self.over = True
        return self.over

    def _start_deflate(self, data: bytes) -> bytes:
        data = self._pending + data
        if len(data) < 2:  # noqa: PLR2004 - the zlib header is two bytes
            self._pending = data
            return b""
        self._pending = b""
        cmf, flg = data[0], data[1]
        is_zlib = (
            cmf & 0x0F == _ZLIB_METHOD
            and cmf >> 4 <= _ZLIB_MAX_WINDOW
            and (cmf << 8 | flg) % _ZLIB_CHECK == 0
        )
        self._decompressor = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
        return data

    def _inflate(self, data: bytes) -> None:
        decompressor = self._decompressor
        assert decompressor is not None  # noqa: S101 - set before any call
        while data and not self.over:
            try:
                out = decompressor.decompress(data, self._cap + 1 - self._size)
            except zlib.error as exc:
                raise InflateError(f"the reply's {self.encoding} data is corrupt") from exc
            self._keep(out)
            if decompressor.eof:
                data = decompressor.unused_data
                if data and self.encoding == "gzip":
                    self._members += 1
                    if self._members >= _MAX_MEMBERS:
                        raise InflateError("the reply holds too many gzip members")
                    decompressor = self._decompressor = zlib.decompressobj(_GZIP_WBITS)
                elif data:
                    raise InflateError("the reply has data after the end of its deflate stream")
            else:
                data = decompressor.unconsumed_tail

    def finish(self) -> bytes:
        """
        Return the decoded body once the raw body has ended.

        Returns:
            The decoded bytes (the cap plus one byte when `over`).

        Raises:
            InflateError: The compressed stream ended before its end marker.
        """
        if not self.over and self.encoding != "identity":
            if self._pending:
                raise InflateError("the reply's deflate data is truncated")
            decompressor = self._decompressor
            if decompressor is not None and self._input and not decompressor.eof:
                raise InflateError(f"the reply's {self.encoding} data is truncated")
        return b"".join(self._chunks)
