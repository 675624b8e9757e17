"""HTTP layer: thin routes, their dependencies, schemas and error handlers."""
