"""Domain rules: pure functions and values, no I/O and no clocks of their own.

* ``_errors``: the client-facing errors, one per gRPC status a caller can act on;
* ``_epochs``: slicing a dataset into epochs (calendar windows x dimension values) with deterministic ids;
* ``_lifecycle``: the epoch state machine (every legal transition in one table) and the retry policy;
* ``_tenants``: quotas, usage and budget arithmetic;
* ``_validation``: checking admission and quota requests field by field;
* ``_estimates``, ``_schema``: size estimates and Arrow schemas of what is loaded;
* ``_heat``: decaying access heat; ``_liveness``: the worker liveness state machine.
"""
