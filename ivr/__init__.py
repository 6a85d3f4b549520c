"""The call's entry: provider webhooks, menu logic, prompts, business hours and the call log."""
