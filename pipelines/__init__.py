"""Stage configuration (typed dataclasses) and the runs that wire the stages together."""
