"""`cards list|remove`: a user's saved cards from the shell (tokens masked or from the env)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from freedompay_async import FreedomPayError
from freedompay_async.cli._common import (
    EXIT_NOT_PAID,
    EXIT_OK,
    UsageError,
    client_from_env,
    describe,
    say,
)
from freedompay_async.masking import mask_token

if TYPE_CHECKING:
    import argparse

    from freedompay_async import SavedCard


def _print(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _card_json(card: SavedCard) -> dict[str, Any]:
    return {
        "card_token": mask_token(card.card_token),
        "card_hash": card.card_hash,
        "card_id": card.card_id,
        "status": card.status,
        "created_at": card.created_at,
        "bank": card.bank,
        "brand": card.brand,
        "expiry_month": card.expiry_month,
        "expiry_year": card.expiry_year,
    }


async def cards(args: argparse.Namespace) -> int:
    """Run `cards list` (masked tokens) or `cards remove` (the token from the environment)."""
    token = None
    if args.action == "remove":
        token = os.environ.get(args.card_token_env)
        if not token:
            raise UsageError(
                f"set the card token in the environment variable {args.card_token_env} "
                "(it is never read from the command line)"
            )
    async with client_from_env(args) as client:
        try:
            if token is None:
                listed = await client.list_cards(user_id=args.user_id, extended=args.extended)
                _print([_card_json(card) for card in listed])
                return EXIT_OK
            removed = await client.remove_card(user_id=args.user_id, card_token=token)
        except FreedomPayError as exc:
            say(f"cards {args.action} failed: {describe(exc, args)}")
            return EXIT_NOT_PAID
    _print({"card_hash": removed.card_hash, "deleted_at": removed.deleted_at})
    return EXIT_OK
