"""Scheduling: from the state of a run to the actions to take, with zero model calls.

Owns the pure scheduler (:mod:`~stretto.schedule.scheduler`: state -> spawn, wait, give up,
skip; critical path first; file leases; capacity per pool; its words in
:mod:`~stretto.schedule.actions`, its ready order in :mod:`~stretto.schedule.ready`), the dry
run and the scheduling simulation. Same inputs, same decisions.

Pure: no I/O. May import :mod:`stretto.plans` and the base modules.
"""
