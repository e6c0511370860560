"""The web layer: request dependencies, problem+json, parameters, admin, pull and ops routes."""
