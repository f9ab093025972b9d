"""Distributed transactions beyond one commit: settling what a crash left in doubt."""
