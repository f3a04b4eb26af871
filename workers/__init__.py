"""Entry points of pvc's long-running processes (node daemon, Celery worker, console tailer)."""
