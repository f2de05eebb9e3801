"""Fieldbus network descriptions (which node or SubDevice serves which axis or pin block), as data.

Loaded strictly like the rest of the config directory; `evo config check` and the HAL drivers share them.
"""
