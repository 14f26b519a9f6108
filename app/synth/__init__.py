"""Synthetic DTSEN releases: `generate.generate_release` (fresh or next quarter), `corrupt`."""
