"""Who is calling and how much they may use: client identity and API keys,
GCRA rate and token limits, daily budgets, and the stores that hold their state."""
