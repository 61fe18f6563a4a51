"""The commentdesk application shell: one Settings object and the command line."""
