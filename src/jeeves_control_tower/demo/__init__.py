"""A realistic instrumented demo system on the in-memory bus.

``jeeves-ipc demo`` runs it from the command line; :func:`run_demo_in_background` runs it
in-process (the dashboard does this when no endpoint is configured). Needs the
``observability`` extra.
"""

from .runner import DemoConfig, DemoHandle, DemoSystem, run_demo, run_demo_in_background

__all__ = ["DemoConfig", "DemoHandle", "DemoSystem", "run_demo", "run_demo_in_background"]
