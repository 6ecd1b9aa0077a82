"""pytest plugin entry point (pytest11). Placeholder until the HIL checks land: it adds nothing."""
