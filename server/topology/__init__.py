"""MSExchangeADTopology: keeps this host's settings.toml a copy of the organization's."""
