"""The per-user master daemon: keeps one user's queue and job records and runs the jobs."""
