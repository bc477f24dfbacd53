"""Errors of the cloud speech clients."""

from __future__ import annotations


class SpeechServiceError(Exception):
    """A speech service failed, refused the request or did not answer in time."""


class SpeechAuthError(SpeechServiceError):
    """The service refused the API key."""


class SpeechRejectedError(SpeechServiceError):
    """The service answered, but refused the request (a model or voice it does not have)."""
