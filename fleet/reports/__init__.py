"""The regulator's reports: fault rates, service life, contractor scorecards, claim audits."""
