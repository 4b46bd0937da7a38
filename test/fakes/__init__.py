"""Test doubles and shared test helpers for the runtime area (never imported by product code)."""
