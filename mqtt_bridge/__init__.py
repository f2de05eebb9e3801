"""evo mqtt_bridge package."""
