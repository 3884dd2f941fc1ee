"""Worker presence: each worker process keeps one row fresh while it lives."""
