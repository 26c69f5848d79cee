"""Pure Flax (linen) modules: encoders, gates, semantic fusion, heads, CIERec."""
