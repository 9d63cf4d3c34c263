"""The service's routers, one per resource: Bundles, the log, the capability statement."""
