"""Sample datasets bundled for the demo and the examples."""
