"""Watching render folders: rules, finished-file detection, supervised observers."""
