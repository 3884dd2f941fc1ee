"""The web page (server-rendered)."""
