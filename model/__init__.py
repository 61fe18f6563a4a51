"""What a commentdesk classifier is and how it predicts: tasks, text normalisation, artifacts, scorers."""
