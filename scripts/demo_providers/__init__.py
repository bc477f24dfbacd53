"""Offline Wyoming speech providers for the demo: pocketsphinx STT and espeak-ng TTS."""
