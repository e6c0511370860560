"""``dmp serve``: the gunicorn edge, the Redis supervisor wiring, the worker process."""
