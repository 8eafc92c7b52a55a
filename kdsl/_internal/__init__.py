"""Private helpers shared across kdsl's packages; nothing here is public API. Stdlib only, so any package may
import from here without changing the direction of kdsl's imports."""
