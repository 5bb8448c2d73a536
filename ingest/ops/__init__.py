"""Operating the product: status, metrics, health."""
