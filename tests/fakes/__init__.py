"""Fakes shared by the tests: in-memory stand-ins for the store and other collaborators."""
