"""Access: sites with their write keys, API keys and their scopes."""
