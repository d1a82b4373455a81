"""kvswarm's own event hooks, one set per plugin (`plugin.events`), as Locust declares its own.

Listeners are called with keyword arguments; the docstrings list them.
"""

from __future__ import annotations

from locust.event import EventHook, Events

__all__ = ["KvswarmEvents"]


class KvswarmEvents(Events):
    """The hooks of one kvswarm plugin (one Locust environment)."""

    run_opened: EventHook
    """
    Fired on the results-owning process (standalone or master) when a test's run
    directory has been created, before any user starts.

    Event arguments:

    :param environment: the Locust environment
    :param run: the open `kvswarm.rundir.RunDirectory`
    """

    record_kept: EventHook
    """
    Fired on the results-owning process for every request record appended to the run
    (on the master: every record of every worker), after it is in requests.csv's buffer.
    This is where sinks attach (the live histograms when the web UI is on, an exporter),
    and only when something reads them, so a run without them pays nothing (on a master,
    the records of a worker's batch are rebuilt from its packed form only when this event
    has a listener: the rows themselves arrive rendered). Keep
    listeners cheap and O(1) per request whatever its token count (a record's `itl_s`
    holds one value per gap: use their mean or a bounded sample).

    Event arguments:

    :param record: the `kvswarm.records.RequestRecord`
    """

    run_closing: EventHook
    """
    Fired on the results-owning process just before a run's files are closed, when every
    worker's records and messages have arrived. Listeners add their sections to run.json
    with `run.update(section=...)`.

    Event arguments:

    :param environment: the Locust environment
    :param run: the `kvswarm.rundir.RunDirectory` being closed
    """
