"""The marketer web UI under ``/ui/``: server-rendered pages over the same core as the API.

It sits above the collectors and exporters (it shows site snippets and destinations) and
below the app factory, which registers its blueprints by name (:data:`dmp.app.BLUEPRINTS`).
"""
