"""A Django project (the ``startproject`` layout, trimmed) that texts tracked sign-in links:
twilio-feedback's app, middleware and settings dict in settings.py, two views in views.py."""
