"""The lrsearch HTTP API (FastAPI) and its SQL persistence. Not built yet: the library in
`lrsearch/` is usable on its own today (see README)."""
