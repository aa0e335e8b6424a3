"""Chains as batchain sees them: references to a user's chain (``module:attr``, YAML files),
inspection of a chain's models, and the fast-path shape ``prompt | model [| parser]``."""
