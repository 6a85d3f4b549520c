"""Post-call surveys: the recommendation question (NPS) by IVR or SMS, and its arithmetic."""
