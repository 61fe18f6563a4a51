"""Training, evaluation and data handling for commentdesk models (never imported by the service)."""
