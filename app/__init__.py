"""MuQ Search application layer: the search service, the web UI and the `muqsearch` CLI."""
