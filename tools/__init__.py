"""Development tools, not shipped with the integration: the device emulator and its audio."""
