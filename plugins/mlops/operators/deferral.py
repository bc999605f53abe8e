"""Waiting the way Airflow is configured to wait: `[operators] default_deferrable` (or an operator's own
`deferrable`) hands the wait to the triggerer; without it the same trigger runs in the worker and
the task resumes at once, so both ways run one code path."""

from __future__ import annotations

import asyncio

from airflow.sdk import conf


def default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def wait_for(operator, context, trigger, method_name: str = "execute_complete"):
    if operator.deferrable:
        operator.defer(trigger=trigger, method_name=method_name)  # raises: the task resumes in method_name

    async def first_event():
        async for event in trigger.run():
            return event.payload
        raise RuntimeError(f"{type(trigger).__name__} ended without an event")

    return getattr(operator, method_name)(context, asyncio.run(first_event()))
