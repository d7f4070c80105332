"""Test doubles for the opencode CLI: event builders in real 1.18.33 shapes and a fake binary."""
