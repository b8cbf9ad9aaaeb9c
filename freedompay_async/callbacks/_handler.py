"""The `aiohttp.web` handler: the only callbacks module that imports aiohttp."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeAlias

from aiohttp.web import HTTPException, Response

from freedompay_async._exceptions import ConfigurationError, DecodeError, SignatureError
from freedompay_async.callbacks._fields import (
    MAX_SALT_ECHO,
    NOT_XML_CHAR,
    build_notification,
    check_secret,
)
from freedompay_async.callbacks._models import (
    STATUS_BY_TEXT,
    CallbackAnswer,
    CallbackStatus,
    CheckNotification,
    Notification,
    ResultNotification,
)
from freedompay_async.callbacks._parse import read_fields, verify_signature
from freedompay_async.callbacks._replay import ReplayGuard
from freedompay_async.callbacks._reply import build_reply

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from aiohttp.web import Request

__all__ = ["CallbackHandler", "make_handler"]

logger = logging.getLogger("freedompay_async.callbacks")

OnCheck: TypeAlias = "Callable[[CheckNotification], Awaitable[CallbackAnswer]]"
OnResult: TypeAlias = "Callable[[ResultNotification], Awaitable[CallbackAnswer]]"


def _unpack(answer: object) -> tuple[CallbackStatus, str]:
    """Check a business callback's answer: a status, or (status, description)."""
    status, description = (
        answer if isinstance(answer, tuple) and len(answer) == 2 else (answer, "")  # noqa: PLR2004 - a pair
    )
    checked = STATUS_BY_TEXT.get(status) if isinstance(status, str) else None
    if checked is None or not isinstance(description, str):
        raise ConfigurationError(
            "a callback must return 'ok', 'rejected' or 'error', or such a status and a description"
        )
    return checked, description


def _salt_hint(entries: list[tuple[str, object]]) -> str:
    """The incoming salt for a reply to a notification that failed: echoed only if harmless."""
    salts = [value for name, value in entries if name == "pg_salt"]
    if len(salts) == 1 and isinstance(salts[0], str) and len(salts[0]) <= MAX_SALT_ECHO:
        salt = salts[0]
        if NOT_XML_CHAR.search(salt) is None:
            return salt
    return ""


class CallbackHandler:
    """
    Answer Freedom Pay's Check and Result notifications: verify, dispatch, reply signed.

    `handle` is the `aiohttp.web` handler (`app.router.add_route("*", "/pay/result.php",
    handler.handle)`); `answer` does the same work for any other framework. The business
    callbacks are async functions taking the notification and returning `"ok"`, `"rejected"` or
    `"error"`, or such a status and a description.

    Args:
        secret_key: The merchant's secret key.
        on_check: Called for each verified Check, or None when this endpoint takes none.
        on_result: Called for each verified Result, or None when this endpoint takes none.
        guard: The replay guard; None creates one with default size.
        script_name: The script name to verify with; None takes the request path's last segment
            (set it when a proxy rewrites the path).

    Raises:
        ConfigurationError: An empty key, or neither callback given.
    """

    __slots__ = ("_guard", "_on_check", "_on_result", "_script_name", "_secret_key")

    def __init__(
        self,
        *,
        secret_key: str,
        on_check: OnCheck | None = None,
        on_result: OnResult | None = None,
        guard: ReplayGuard | None = None,
        script_name: str | None = None,
    ) -> None:
        if on_check is None and on_result is None:
            raise ConfigurationError("give on_check, on_result or both")
        self._secret_key = check_secret(secret_key)
        self._on_check = on_check
        self._on_result = on_result
        self._guard = ReplayGuard() if guard is None else guard
        self._script_name = script_name

    @property
    def guard(self) -> ReplayGuard:
        """The replay guard in use."""
        return self._guard

    def _refuse(self, script_name: str, salt: str, description: str) -> bytes:
        return build_reply(
            "error",
            description=description,
            salt=salt,
            script_name=script_name,
            secret_key=self._secret_key,
        )

    async def answer(
        self,
        fields: Mapping[str, object] | Iterable[tuple[str, object]],
        *,
        script_name: str,
    ) -> bytes:
        """
        Verify a notification, call the business callback once, and return the signed reply.

        A notification that does not decode or verify, or that no callback takes, is answered
        `error` without calling any callback. A repeated one gets the stored reply.

        Args:
            fields: The received fields (form or query), or a single `pg_xml` field.
            script_name: The last path segment of the URL the notification was sent to.

        Returns:
            The reply to send with HTTP 200.

        Raises:
            Exception: Whatever the business callback raised (answer HTTP 500: Freedom Pay
                retries), or `ConfigurationError` when it returned something else than a status.
        """
        try:
            entries = read_fields(fields)
        except DecodeError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, "", "malformed notification")
        salt = _salt_hint(entries)
        try:
            verify_signature(entries, script_name, self._secret_key)
            notification = build_notification(entries, script_name)
        except SignatureError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, salt, "invalid signature")
        except DecodeError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, salt, "malformed notification")
        stored = self._guard.get(notification)
        if stored is not None:
            logger.info(
                "repeated %s for payment %d answered as before",
                type(notification).__name__,
                notification.payment_id,
            )
            return stored
        if isinstance(notification, CheckNotification):
            if self._on_check is None:
                logger.warning("a Check arrived at %r, which takes no Check", script_name)
                return self._refuse(script_name, notification.salt, "check not supported")
            on_check = self._on_check
            return await self._guard.run(
                notification, lambda: self._dispatch(notification, on_check(notification))
            )
        if self._on_result is None:
            logger.warning("a Result arrived at %r, which takes no Result", script_name)
            return self._refuse(script_name, notification.salt, "result not supported")
        on_result = self._on_result
        return await self._guard.run(
            notification, lambda: self._dispatch(notification, on_result(notification))
        )

    async def _dispatch(
        self, notification: Notification, pending: Awaitable[CallbackAnswer]
    ) -> bytes:
        status, description = _unpack(await pending)
        if (
            status == "rejected"
            and isinstance(notification, ResultNotification)
            and not notification.can_reject
        ):
            logger.warning(
                "payment %d: the callback rejected a Result without pg_can_reject=1; "
                "Freedom Pay keeps the payment completed",
                notification.payment_id,
            )
        return build_reply(
            status,
            description=description,
            salt=notification.salt,
            script_name=notification.script_name,
            secret_key=self._secret_key,
        )

    async def handle(self, request: Request) -> Response:
        """
        Handle one notification over HTTP.

        Args:
            request: The incoming request (GET query, POST form or multipart, or `pg_xml`).

        Returns:
            HTTP 200 with the signed XML reply, or HTTP 500 when the business callback failed.
        """
        if self._script_name is not None:
            script_name = self._script_name
        else:  # the path has no query; never read it as a URL (`//x` is not a host here)
            script_name = request.path.rsplit("/", 1)[-1]
        fields: list[tuple[str, object]] = []
        if request.method == "POST" and request.body_exists:
            try:
                fields = list((await request.post()).items())
            except HTTPException:  # e.g. 413: the body is larger than the application accepts
                raise
            except Exception:  # noqa: BLE001 - any unreadable body is answered `error`
                logger.warning(
                    "callback to %r: the request body is not a readable form", script_name
                )
        if not fields:
            fields = list(request.query.items())
        try:
            body = await self.answer(fields, script_name=script_name)
        except Exception as exc:  # any business failure must become a retryable 500
            logger.error(  # noqa: TRY400 - the traceback is the merchant's, given via exc_info
                "the callback for %r raised %s; answered HTTP 500 so Freedom Pay retries",
                script_name,
                type(exc).__name__,
                exc_info=exc,
            )
            return Response(status=500, text="callback failed")
        return Response(body=body, content_type="application/xml", charset="utf-8")

    def __repr__(self) -> str:
        kinds = [
            name for name, cb in (("check", self._on_check), ("result", self._on_result)) if cb
        ]
        return f"CallbackHandler(takes={kinds!r}, script_name={self._script_name!r})"


def make_handler(
    *,
    secret_key: str,
    on_check: OnCheck | None = None,
    on_result: OnResult | None = None,
    guard: ReplayGuard | None = None,
    script_name: str | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """
    Create an `aiohttp.web` handler for Check and/or Result notifications.

    This is `CallbackHandler(...).handle`; build the `CallbackHandler` yourself to reach its
    `guard` or to call `answer` from another framework.

    Example:
        ```python
        async def on_result(n: ResultNotification) -> CallbackAnswer:
            await orders.settle(n.order_id, paid=n.success, payment_id=n.payment_id)
            return "ok"

        app.router.add_post("/freedompay/result", make_handler(secret_key=key, on_result=on_result))
        ```

    Args:
        secret_key: The merchant's secret key.
        on_check: Async callback for Checks, or None.
        on_result: Async callback for Results, or None.
        guard: The replay guard; None creates one.
        script_name: Overrides the script name taken from the request path.

    Returns:
        The handler: a callable taking an `aiohttp.web.Request` and returning a response.

    Raises:
        ConfigurationError: An empty key, or neither callback given.
    """
    return CallbackHandler(
        secret_key=secret_key,
        on_check=on_check,
        on_result=on_result,
        guard=guard,
        script_name=script_name,
    ).handle
