"""Talking to masters from outside: one call with leader redirects, and request builders."""
