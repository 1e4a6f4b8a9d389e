"""Helpers the tests share (conftests declare only fixtures; everything else lives here)."""
