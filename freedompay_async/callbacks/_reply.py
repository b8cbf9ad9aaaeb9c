"""The merchant's signed XML reply to a notification."""

from __future__ import annotations

from typing import TYPE_CHECKING

from freedompay_async._exceptions import ConfigurationError
from freedompay_async.callbacks._fields import NOT_XML_CHAR, check_secret
from freedompay_async.callbacks._models import STATUS_BY_TEXT
from freedompay_async.signing import pg_sig

if TYPE_CHECKING:
    from freedompay_async.callbacks._models import CallbackStatus

__all__ = ["build_reply"]


def _escape(text: str) -> str:
    """Escape XML text so that a parser gives back exactly *text* (a CR survives as `&#13;`)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def build_reply(
    status: CallbackStatus,
    *,
    description: str = "",
    salt: str,
    script_name: str,
    secret_key: str,
) -> bytes:
    """
    Build the signed XML reply to a Check or Result notification.

    The reply is `<response>` with `pg_status`, `pg_description`, `pg_salt` and `pg_sig`, signed
    like any message: `md5("<script>;<description>;<salt>;<status>;<secret_key>")`.

    Args:
        status: `ok` (accept), `rejected` (refuse; for a Result only when `can_reject`) or
            `error` (the data could not be interpreted).
        description: Text for Freedom Pay (shown to the payer on a refusal).
        salt: The notification's `pg_salt`, echoed back.
        script_name: The script name the notification was verified with.
        secret_key: The merchant's secret key.

    Returns:
        The UTF-8 XML document, ready to send with HTTP 200.

    Raises:
        ConfigurationError: An unknown status, an empty key, or a description or salt holding
            characters XML cannot carry.
    """
    if status not in STATUS_BY_TEXT:
        raise ConfigurationError("status must be 'ok', 'rejected' or 'error'")
    for name, text in (("description", description), ("salt", salt)):
        if not isinstance(text, str) or NOT_XML_CHAR.search(text) is not None:
            raise ConfigurationError(f"{name} must be text that XML can carry")
    signature = pg_sig(
        script_name,
        (("pg_status", status), ("pg_description", description), ("pg_salt", salt)),
        check_secret(secret_key),
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<response><pg_status>{status}</pg_status>"
        f"<pg_description>{_escape(description)}</pg_description>"
        f"<pg_salt>{_escape(salt)}</pg_salt><pg_sig>{signature}</pg_sig></response>"
    ).encode()
