"""Quality indicators: facts derived from the Bundles, MeasureReports, plots."""
