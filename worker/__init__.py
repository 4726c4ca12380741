"""A worker process: loads the models once, runs the units virnucd hands it, writes parts.

Started by virnucd as `python -m virnuc.worker.boot`; imports only virnuc.pipeline,
virnuc.protocol and the shared modules of the virnuc package (parts, faults, logging).
See docs/architecture.md §2.
"""
