"""Field mapping and type coercion between adapters and the warehouse."""
