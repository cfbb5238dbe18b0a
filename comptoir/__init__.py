"""Comptoir's command line and the glue that ties its parts together."""
