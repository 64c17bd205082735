"""Adapters that run on our side for hosts and the OS (service units, host installers)."""
