"""The Celery app and the thin, named tasks that call pvc's operations."""
