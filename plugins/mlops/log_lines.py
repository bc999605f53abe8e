"""Task log messages readable in the Airflow UI's log panel as it opens: a short headline first, details below.

The panel does not wrap lines by default, and each record already starts with its time and level, so a long
line is cut off at the panel's edge. The UI keeps a message's own line breaks (its event text is rendered
`pre-wrap`), so a message is a headline of at most HEADLINE_MAX characters, then its details, one per
indented line.
"""

from __future__ import annotations

from collections.abc import Sequence

HEADLINE_MAX = 100


def message(headline: str, why: str | Sequence[str] = (), details: Sequence[str] = ()) -> str:
    """`headline: why` on the first line when that fits in HEADLINE_MAX characters, else the headline alone
    with each part of `why` on a line below it; then each of `details` on a line of its own. `headline` itself
    must be short (at most HEADLINE_MAX characters); the callers' tests hold them to it."""
    parts = [why] if isinstance(why, str) else [part for part in why if part]
    joined = f"{headline}: {'; '.join(parts)}" if parts else headline
    first, below = (joined, []) if len(joined) <= HEADLINE_MAX else (headline, parts)
    return "\n".join([first, *(f"  {line}" for line in [*below, *details] if line)])
