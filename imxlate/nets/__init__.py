"""Network building blocks; nets never import families."""
