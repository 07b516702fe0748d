"""Policy documents shipped with Teleposture (YAML) and their JSON Schema."""
