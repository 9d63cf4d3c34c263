"""Pure mappings from FHIR R4 Bundles to what other systems read: deterministic, clock injected."""
