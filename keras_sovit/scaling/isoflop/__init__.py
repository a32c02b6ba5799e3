"""The IsoFLOP search (the default): IsoFLOP profiles fitted as quadratic
surfaces (`surfaces`), their optima fitted as a power-law path (`path`), and
the ask/tell search over compute levels (`search`)."""
