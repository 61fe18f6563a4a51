"""The commentdesk web service: scoring API (and later the review queue and moderator page)."""
