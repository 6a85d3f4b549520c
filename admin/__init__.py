"""Administration: API tokens and roles, the YAML configuration, and the JSON API."""
