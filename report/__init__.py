"""Run statistics that generators record, and the side-by-side comparison (grid + table) drawn from them."""
