"""Upgrading a Stabilize events database (tables ``events``, ``snapshots``,
``event_subscriptions``) to this package's tables, in place.

The command is ``stabilize-events upgrade URL`` (see `stabilize_events.cli`).
The modules:

- `stabilize_events.upgrade.source`: finding Stabilize's tables in a file, what
  they hold, and the check `SqliteEventStore` runs before opening a file;
- `stabilize_events.upgrade.convert`: one reference row as our `Event`, and the
  field-by-field comparison the verification runs;
- `stabilize_events.upgrade.run`: the survey (dry run), the resumable copy,
  the verification and ``--drop-old``.

This package imports nothing at import time, so that the store can use
`source` without importing the copy machinery (which imports the store).
"""
