"""Deep RC's example pipelines: the paper's two end-to-end jobs (see docs/results.md)."""
