"""The policy in its two forms: the YAML spec a person writes (strictly
validated) and the compiled objects the request path reads."""
