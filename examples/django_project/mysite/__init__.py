"""A minimal Django project wrapped in twilio-feedback's middleware (see wsgi.py, asgi.py)."""
