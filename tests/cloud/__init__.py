"""Tests of the HA-free cloud speech clients against loopback services."""
