"""catalog: the product catalog REST API."""
