"""Who calls: API clients, roles and bearer credentials (clients.py), SMART Backend Services
(smart.py), the per-process credential cache (cache.py)."""
