"""The errors stabilize_events raises.

Every error derives from `StabilizeEventsError`; where a builtin exception is
the natural expectation (a bad value, a wrong type) the error derives from that
builtin too, so ``except ValueError`` keeps working. Messages say what was wrong
and where: the event id, the sequence, the key path or the URL.

::

    StabilizeEventsError
    ├── InvalidArgumentError (ValueError)   a value out of range or malformed (URL, option, order_by)
    ├── ArgumentTypeError (TypeError)       an argument of the wrong type
    ├── PayloadError (TypeError)            a value in ``data`` that cannot be stored; names the key path
    ├── IntegrationError                    the installed Stabilize's event model differs from ours
    └── StoreError                          the store could not do what was asked
        ├── StoreOpenError                  cannot open the database (missing directory or file, not SQLite)
        │   └── SchemaError                 the database is not an event store of a version we can use
        ├── StoreClosedError                the store was closed
        ├── DuplicateEventError             an event with this event_id is already stored
        ├── ConcurrencyError                expected_version did not match the entity's stored version
        ├── CorruptEventError               a stored row cannot be decoded; names the sequence
        └── DatabaseDamagedError            SQLite found the database file damaged: no more writes

Durable subscriptions add theirs, in `stabilize_events.subscriptions`: ``SubscriptionError``
(a `StabilizeEventsError`) with ``SubscriptionNotFoundError`` (also ``KeyError``),
``HandlerTimeoutError`` (also ``TimeoutError``) and ``WebhookDeliveryError``.
"""

from __future__ import annotations


class StabilizeEventsError(Exception):
    """Base of every error raised by stabilize_events."""


class InvalidArgumentError(StabilizeEventsError, ValueError):
    """An argument has an invalid value (a malformed URL, an unknown option, a negative limit)."""


class ArgumentTypeError(StabilizeEventsError, TypeError):
    """An argument has the wrong type."""


class PayloadError(StabilizeEventsError, TypeError):
    """A value in an event's ``data`` cannot be encoded; the message names its key path.

    Nothing of the batch that carried it is written.
    """


class IntegrationError(StabilizeEventsError):
    """The installed Stabilize cannot be wired to this build: its event model or hooks differ.

    Raised when configuring, before anything is changed.
    """


class StoreError(StabilizeEventsError):
    """The event store failed to carry out an operation; nothing was half-written."""


class StoreOpenError(StoreError):
    """The database cannot be opened: missing directory or file, or not an SQLite database."""


class SchemaError(StoreOpenError):
    """The database opened but is not an event store this build can use."""


class StoreClosedError(StoreError):
    """The store has been closed."""


class DuplicateEventError(StoreError):
    """An event with the same ``event_id`` is already stored; the batch was not written."""


class ConcurrencyError(StoreError):
    """Another writer appended to the entity first: the expected version did not match."""


class CorruptEventError(StoreError):
    """A stored event row cannot be decoded; the message names its sequence."""


class DatabaseDamagedError(StoreError):
    """SQLite reported the database file damaged ("database disk image is malformed").

    From then on the store refuses every write to it (reads of undamaged parts go on);
    the message says how to check the file and recover its data.
    """


__all__ = [
    "ArgumentTypeError",
    "ConcurrencyError",
    "CorruptEventError",
    "DatabaseDamagedError",
    "DuplicateEventError",
    "IntegrationError",
    "InvalidArgumentError",
    "PayloadError",
    "SchemaError",
    "StabilizeEventsError",
    "StoreClosedError",
    "StoreError",
    "StoreOpenError",
]
