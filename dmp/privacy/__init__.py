"""Privacy: what dmp holds about a person, handed over as one document (GDPR Art. 15)."""
