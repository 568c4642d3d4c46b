"""What dlc writes: canonical JSON and hashes, identities, the compiled artifact (manifest), run directories and their typed records."""
