"""Ports: what the service layer needs from the outside world, as protocols."""
