"""Settings: pydantic models (the one definition of every parameter) and the TOML store."""
