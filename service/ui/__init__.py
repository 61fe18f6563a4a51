"""The moderator web page under ``/ui``: server-rendered, keyboard-first, no inline scripts."""
