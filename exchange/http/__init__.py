"""The HTTP surface: one router per resource (routes/), what a route is given (deps.py), who may
call it (guards.py), the one table from error kind to status and OperationOutcome (errors.py),
rate limits, public URLs, connection limits."""
