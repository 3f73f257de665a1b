"""Plain, deliberately simple implementations: the definition of right for every backend."""
