"""The JSON shapes at both ends: decode-side Structs, output builders, event bytes."""
