"""
The classic Merchant API on `FreedomPayClient`: saved cards, status, refund, cancel, capture.

`ClassicOperations` is a base class of `FreedomPayClient`; its methods build the caller's values
into one operation and leave every rule to `_classic_driver.ClassicDriver` and the pure
`_classic_call.ClassicCall` (see the README, "Saved cards and the payment's further life").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from freedompay_async._classic_driver import ClassicDriver
from freedompay_async._classic_models import ClassicOperation

if TYPE_CHECKING:
    from decimal import Decimal

    from freedompay_async._classic_models import (
        CancelResult,
        CaptureResult,
        CardAddition,
        PaymentStatus,
        RefundResult,
        RemovedCard,
        SavedCard,
    )
    from freedompay_async._config import RetryPolicy

__all__ = ["ClassicOperations"]


class ClassicOperations(ClassicDriver):
    """The classic Merchant API calls of `FreedomPayClient` (see the module docstring)."""

    # -- saved cards -------------------------------------------------------------------------

    async def save_card(
        self,
        *,
        user_id: str,
        back_link: str,
        post_link: str | None = None,
        order_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> CardAddition:
        """
        Start saving a card: the user enters it at the returned `redirect_url`.

        Calls `cardstorage/add2` (or `add`, `ClassicOptions.card_add_script`). Nothing is
        charged, so a lost reply is simply asked again.

        Args:
            user_id: The card owner's id in the merchant's system.
            back_link: Where the card page sends the user afterwards.
            post_link: Where the gateway posts the result, if anywhere.
            order_id: The merchant's id for this request, if any.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CardAddition`: `redirect_url`, `payment_id`, `order_id`.

        Raises:
            ConfigurationError: An argument is invalid (the message names it); nothing was sent.
            GatewayError: The gateway refused the request.
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {
            "user_id": user_id,
            "back_link": back_link,
            "post_link": post_link,
            "order_id": order_id,
        }
        return cast(
            "CardAddition", await self._classic_read(ClassicOperation.CARD_ADD, params, retry=retry)
        )

    async def list_cards(
        self, *, user_id: str, extended: bool = False, retry: RetryPolicy | None = None
    ) -> tuple[SavedCard, ...]:
        """
        List a user's saved cards.

        Args:
            user_id: The card owner's id.
            extended: Also ask for bank, brand and expiry (`pg_extend_data=1`).
            retry: This call's retry policy instead of the client's.

        Returns:
            The cards (`SavedCard`, tokens masked in `repr`), possibly none.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            GatewayError: The gateway refused the request.
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"user_id": user_id, "extended": extended}
        return cast(
            "tuple[SavedCard, ...]",
            await self._classic_read(ClassicOperation.CARD_LIST, params, retry=retry),
        )

    async def remove_card(
        self, *, user_id: str, card_token: str, retry: RetryPolicy | None = None
    ) -> RemovedCard:
        """
        Remove one of a user's saved cards.

        Args:
            user_id: The card owner's id.
            card_token: The card's token (never logged).
            retry: This call's retry policy instead of the client's.

        Returns:
            The `RemovedCard`: masked PAN, `deleted_at`, status.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            GatewayError: The gateway refused (an unknown card, for one).
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"user_id": user_id, "card_token": card_token}
        return cast(
            "RemovedCard",
            await self._classic_read(ClassicOperation.CARD_REMOVE, params, retry=retry),
        )

    # -- a payment's further life --------------------------------------------------------------

    async def payment_status(
        self,
        *,
        payment_id: int | None = None,
        order_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> PaymentStatus:
        """
        Read a payment's status (`get_status3`), with its refunds and reversals.

        Args:
            payment_id: The payment's id (a paid invoice's `invoice_id`); or
            order_id: the merchant's order id. Exactly one of the two.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `PaymentStatus`.

        Raises:
            ConfigurationError: Neither or both ids given, or one is invalid; nothing was sent.
            GatewayError: The gateway refused (an unknown payment, for one).
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"payment_id": payment_id, "order_id": order_id}
        return cast(
            "PaymentStatus",
            await self._classic_read(ClassicOperation.PAYMENT_STATUS, params, retry=retry),
        )

    async def refund_payment(
        self, *, payment_id: int, amount: Decimal | None = None, retry: RetryPolicy | None = None
    ) -> RefundResult:
        """
        Refund a payment, fully or in part; at most once, whatever fails on the way.

        The payment's status is read first: a refund of more than is left is refused before
        anything is sent. After an ambiguous failure (a timeout after the write, a broken
        connection, HTTP 5xx, an unreadable reply, error 1000) the status is read again and
        compared with the first read; the refund is never sent twice on a guess.

        Args:
            payment_id: The payment to refund.
            amount: The amount (`Decimal`, at most two decimals); None refunds what is left.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `RefundResult` (the refund's own payment id when known).

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already refunded this amount of this payment (or is
                doing so); nothing was sent.
            ExcessRefundError: The amount is more than is left to refund; nothing was sent.
            WriteRefusedError: A status read shows the refund failed.
            GatewayError: The gateway refused the refund; nothing was refunded.
            AmbiguousWriteError: The refund may have landed and no status read could tell;
                read `payment_status` before refunding again.
            TransportError: The refund was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "RefundResult",
            await self._write(
                ClassicOperation.REFUND, payment_id=payment_id, amount=amount, retry=retry
            ),
        )

    async def cancel_payment(
        self, *, payment_id: int, retry: RetryPolicy | None = None
    ) -> CancelResult:
        """
        Cancel a held (two-step, not yet captured) payment; at most once.

        Args:
            payment_id: The held payment.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CancelResult`.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already cancelled this payment; nothing was sent.
            WriteRefusedError: The payment is captured or cancelled already; nothing was sent.
            GatewayError: The gateway refused the cancel.
            AmbiguousWriteError: The cancel may have landed and no status read could tell.
            TransportError: The cancel was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "CancelResult",
            await self._write(
                ClassicOperation.CANCEL, payment_id=payment_id, amount=None, retry=retry
            ),
        )

    async def capture_payment(
        self, *, payment_id: int, amount: Decimal | None = None, retry: RetryPolicy | None = None
    ) -> CaptureResult:
        """
        Capture (clear) a held payment, fully or in part; at most once.

        Args:
            payment_id: The held payment.
            amount: The amount to capture (at most the held amount); None captures all of it.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CaptureResult`.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already captured this payment; nothing was sent.
            WriteRefusedError: The payment is captured or cancelled already; nothing was sent.
            GatewayError: The gateway refused the capture.
            AmbiguousWriteError: The capture may have landed and no status read could tell.
            TransportError: The capture was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "CaptureResult",
            await self._write(
                ClassicOperation.CAPTURE, payment_id=payment_id, amount=amount, retry=retry
            ),
        )
