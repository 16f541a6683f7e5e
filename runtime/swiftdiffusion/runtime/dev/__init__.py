"""Development tooling: small model sets built offline, the local two-process stack, the
demo and synthetic LoRAs. Nothing here is imported by the servers."""
