"""The lrsearch worker that claims and runs trials. Not built yet: the library in `lrsearch/`
is usable on its own today (see README)."""
